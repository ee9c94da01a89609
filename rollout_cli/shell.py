"""The CLI's imperative edge: run a command, print its outcome once, exit 0 / 1 / 2.

Errors from rollout_core map by kind: ConfigError (bad input, a bad flag value) exits 2,
any other RolloutError (Redis down, Prometheus down) exits 1. One line each, on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rollout_core.bootstrap import Settings
    from rollout_core.flags import RedisFlagStore

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "Outcome",
    "actor",
    "exit_code",
    "log_audited",
    "now",
    "open_store",
    "run",
    "settings",
]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Outcome:
    """What a command prints: `output` on stdout (text, a Rich table, or a list of both, in
    order), `notes` on stderr."""

    output: str | RenderableType | list[str | RenderableType] = ""
    code: int = 0
    notes: tuple[str, ...] = field(default=())


def exit_code(error: Exception) -> int:
    from rollout_core.errors import ConfigError

    return EXIT_BAD_INPUT if isinstance(error, ConfigError) else EXIT_FAILURE


def run(command: Callable[[], Outcome]) -> NoReturn:
    """Run `command`, print its outcome or its error once, and exit with its code."""
    from rollout_core.errors import RolloutError

    try:
        outcome = command()
    except RolloutError as error:
        _print_error(f"error: {error}")
        raise typer.Exit(exit_code(error)) from None
    for note in outcome.notes:
        _print_error(note)
    parts = outcome.output if isinstance(outcome.output, list) else [outcome.output]
    for part in parts:
        if isinstance(part, str):
            # text is written whole: a line Rich would crop at the terminal's width (a query in
            # a ready-to-paste rollouts.yaml) must reach the user intact
            if part:
                sys.stdout.write(part + "\n")
        else:
            from rich.console import Console

            console = Console(highlight=False)
            if not console.is_terminal:
                console.width = 160  # a pipe or a log gets whole rows, not 80-column wraps
            console.print(part)
    raise typer.Exit(outcome.code)


def _print_error(line: str) -> None:
    sys.stderr.write(line + "\n")


def now() -> datetime:
    """The CLI is the edge: the one place that reads the clock for a manual change."""
    return datetime.now(UTC)


def settings() -> Settings:
    """The environment, read once by `rollout_core.bootstrap` (the one place that reads it)."""
    from rollout_core.bootstrap import Settings

    return Settings.from_env()


def open_store() -> RedisFlagStore:
    """The flag store on REDIS_URL, trimming the audit to ROLLOUT_AUDIT_RETENTION entries."""
    from rollout_core.flags import DEFAULT_AUDIT_RETENTION, RedisFlagStore
    from rollout_core.redis_connection import connect

    config = settings()
    # the bootstrap engineer adds `audit_retention` (ROLLOUT_AUDIT_RETENTION) to Settings
    retention = getattr(config, "audit_retention", None) or DEFAULT_AUDIT_RETENTION
    return RedisFlagStore(
        connect(config.redis_target()),  # REDIS_URL, or through REDIS_SENTINELS
        audit_retention=retention,
        wait_timeout_ms=config.redis_wait_timeout_ms,
    )


def actor(by: str | None) -> str:
    """Who acts, for the audit: `--by`, else the OS user ($USER, else the login name), else
    "manual"."""
    if by is not None and by.strip():
        from rollout_cli.inputs import require_one_line

        return require_one_line(by.strip(), "--by")
    user = os.environ.get("USER", "").strip()
    if not user:
        try:
            user = os.getlogin()
        except OSError:
            user = ""
    return user or "manual"


def log_audited(store: RedisFlagStore, audit_id: str | None) -> tuple[str, ...]:
    """Append the audited write's line to the Markdown log (ROLLOUT_AUDIT_LOG); notes for
    stderr. The stream is the durable record, so a failed copy is a warning, not a failure."""
    from rollout_core.audit import log_audited_write
    from rollout_core.errors import RolloutError

    if audit_id is None:
        return ()
    path = settings().audit_log_path
    try:
        log_audited_write(store.client, audit_id, path)
    except (OSError, RolloutError) as error:
        return (
            f"warning: {path} not updated ({error}); the change is in rollout:audit, and "
            f"`rollout audit --rebuild-log {path}` rewrites the log from it",
        )
    return ()
