"""`rollout alert-bridge`: serve Alertmanager's webhook receiver that turns alerts into
Prefect events (deployments/alert_bridge.py). Loads only typer until it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rollout_cli.shell import Outcome, run

__all__ = ["alert_bridge"]


def alert_bridge(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 9095,
    config: Annotated[
        Path,
        typer.Option("--config", help="The rollouts file: alerts for other features are refused."),
    ] = Path("rollouts.yaml"),
) -> None:
    """Receive Alertmanager webhooks on POST /alerts (bearer ROLLOUT_BRIDGE_TOKEN) and send
    each alert with a `rollout_feature` label to Prefect as rollout.alert.firing/resolved."""

    def command() -> Outcome:
        from deployments.alert_bridge import serve

        typer.echo(f"alert bridge on http://{host}:{port}/alerts (features from {config})")
        serve(host, port, str(config))
        return Outcome()

    run(command)
