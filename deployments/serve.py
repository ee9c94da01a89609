"""`rollout serve`: both deployments from one process, no work pool, for a single machine.

The kill switch survives a restart: before serving, each deployment's state is read by name
and passed through, so a paused deployment stays paused and an inactive schedule stays
inactive (Prefect's `to_deployment()` would otherwise unpause it and recreate an active
schedule). The schedule keeps prefect.yaml's fixed slug, `every-10-minutes`.

Stopping the process does not pause anything (`pause_on_shutdown=False`): Prefect's own
pause on shutdown is indistinguishable from an operator's, so with it every systemd restart
would come back switched off. Runs scheduled while the process was down start late when it
returns and complete as skipped (the flow's late-run check); the next on-time run decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from deployments.kill_switch import CONTROLLER_DEPLOYMENT, SCHEDULE_SLUG

__all__ = ["OVERRIDE_DEPLOYMENT", "KeptSwitch", "kept_switch", "serve_all", "served_deployments"]

OVERRIDE_DEPLOYMENT = "rollout-override/manual"


@dataclass(frozen=True)
class KeptSwitch:
    """What a restart must keep: the deployment paused, the schedule active or not."""

    paused: bool = False
    schedule_active: bool = True


def kept_switch(client: Any, name: str) -> KeptSwitch:
    """The switch of deployment `name` as it is on the server; on by default when it is new."""
    from prefect.exceptions import ObjectNotFound

    from deployments.kill_switch import read_switch

    try:
        switch = read_switch(client, name)
    except ObjectNotFound:
        return KeptSwitch()
    active = all(schedule.active for schedule in switch.schedules)
    return KeptSwitch(paused=switch.deployment_paused, schedule_active=active)


def served_deployments(
    client: Any,
    dry_run: bool = True,
    interval_seconds: int = 600,
    config_path: str = "rollouts.yaml",
) -> list[Any]:
    """The controller and override RunnerDeployments, carrying the switches the server has."""
    from prefect.schedules import Interval

    from flows.controller import rollout_controller
    from flows.override import rollout_override

    controller_switch = kept_switch(client, CONTROLLER_DEPLOYMENT)
    controller = rollout_controller.to_deployment(
        name=CONTROLLER_DEPLOYMENT.split("/")[1],
        schedules=[
            Interval(interval_seconds, slug=SCHEDULE_SLUG, active=controller_switch.schedule_active)
        ],
        paused=controller_switch.paused,
        parameters={"dry_run": dry_run, "config_path": config_path},
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        tags=["rollout"],
    )
    override = rollout_override.to_deployment(
        name=OVERRIDE_DEPLOYMENT.split("/")[1],
        paused=kept_switch(client, OVERRIDE_DEPLOYMENT).paused,
        tags=["rollout"],
    )
    return [controller, override]


def serve_all(
    dry_run: bool = True, interval_seconds: int = 600, config_path: str = "rollouts.yaml"
) -> None:
    """Serve rollout-controller/every-10-minutes and rollout-override/manual until stopped."""
    from prefect import serve

    from deployments.prefect_api import prefect_api

    with prefect_api() as client:
        deployments = served_deployments(client, dry_run, interval_seconds, config_path)
    serve(*deployments, pause_on_shutdown=False)
