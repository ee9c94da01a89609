"""`rollout demo`: the whole rollout story offline, on the real controller flow.

Prefect, pandas and matplotlib are imported inside the command, after the demo's environment
is set (Prefect reads PREFECT_HOME at import), so the other commands stay fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["demo"]


def demo(
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir",
            help="Where the demo keeps its Prefect database, Redis data, audit log and PNG.",
        ),
    ] = Path(".demo"),
) -> None:
    """Eight scenes of a rollout on the real controller flow (the last one region by region),
    offline (about a minute).
    Exit 0 when every scene ended as expected, else 1."""
    started = time.monotonic()
    from rollout_demo.environment import apply_demo_environment
    from rollout_demo.prefect_api import start_ephemeral_api

    apply_demo_environment(output_dir)
    # first, so the API boots while the flow, pandas and matplotlib are imported
    api = start_ephemeral_api(output_dir)
    try:
        from rich.console import Console

        from rollout_demo.runner import run_demo

        console = Console() if sys.stdout.isatty() else Console(width=150)
        code = run_demo(output_dir, console, api, started)
    except RuntimeError as error:  # Prefect's API or redis-server did not start: say which
        sys.stderr.write(f"error: the demo could not start: {error}\n")
        code = 1
    finally:
        api.stop()
    raise typer.Exit(code)
