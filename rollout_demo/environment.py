"""The demo's process environment, applied before Prefect is imported (Prefect reads its
settings at import): Prefect state under the demo directory, its ephemeral API, quiet logs."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["FOREIGN_PREFECT_SETTINGS", "apply_demo_environment", "demo_environment"]

# a user's server, profile or database would send the demo's runs somewhere else
FOREIGN_PREFECT_SETTINGS = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
)


def demo_environment(output_dir: Path) -> dict[str, str]:
    out = output_dir.resolve()
    return {
        # the SQLite database survives between demos: the second start skips the migrations
        "PREFECT_HOME": str(out / "prefect"),
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # run logs still reach the API (and the UI); the terminal shows the demo's table only
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "ROLLOUT_AUDIT_LOG": str(out / "rollout_log.md"),
        "ROLLOUT_FETCH_BACKOFF_SECONDS": "0.1",  # the outage's retries: 0.1 s, 0.2 s, 0.4 s
    }


def apply_demo_environment(
    output_dir: Path, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set the demo's variables (and drop a user's Prefect server settings); what was set."""
    env = os.environ if environ is None else environ
    for name in FOREIGN_PREFECT_SETTINGS:
        env.pop(name, None)
    values = demo_environment(output_dir)
    Path(values["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    env.update(values)
    return values
