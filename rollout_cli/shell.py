"""The CLI's imperative edge: run a command, print its outcome once, exit 0 / 1 / 2.

Errors from rollout_core map by kind: ConfigError (bad input, a bad flag value) exits 2,
any other RolloutError (Redis down, Prometheus down) exits 1. One line each, on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from rollout_core.flags import RedisFlagStore

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "Outcome", "exit_code", "now", "open_store", "run"]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Outcome:
    """What a command prints: `output` on stdout (text or a Rich table), `notes` on stderr."""

    output: str | RenderableType = ""
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
    if isinstance(outcome.output, str):
        if outcome.output:
            sys.stdout.write(outcome.output + "\n")
    else:
        from rich.console import Console

        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 160  # a pipe or a log gets whole rows, not 80-column wraps
        console.print(outcome.output)
    raise typer.Exit(outcome.code)


def _print_error(line: str) -> None:
    sys.stderr.write(line + "\n")


def now() -> datetime:
    """The CLI is the edge: the one place that reads the clock for a manual change."""
    return datetime.now(UTC)


def open_store() -> RedisFlagStore:
    """The flag store on REDIS_URL (read from the environment)."""
    from rollout_core.flags import RedisFlagStore
    from rollout_core.redis_connection import connect

    return RedisFlagStore(connect())
