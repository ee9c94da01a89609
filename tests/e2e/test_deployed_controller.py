"""The controller as users deploy it: prefect.yaml on a real Prefect server, runs picked up by
a process worker, the kill switch surviving a redeploy, and the failure notification.

The tests run in file order: the pause test comes last because it switches the controller off.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
import redis
from typer.testing import CliRunner, Result

from rollout_cli.main import app
from tests.e2e.conftest import REPO_ROOT, Stack, WebhookReceiver
from tests.integration.conftest import audit_entries, flag_keys, seed_flag
from tests.integration.traffic import poll

pytestmark = pytest.mark.e2e

CONTROLLER = "rollout-controller/every-10-minutes"


def rollout(*args: str) -> Result:
    """The operator's command, in-process, against the test server (PREFECT_API_URL)."""
    return CliRunner().invoke(app, list(args))


def controller_deployment() -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(CONTROLLER)


def run_deployment(parameters: dict[str, Any], timeout: float = 120) -> Any:
    """A manual run through the worker (as `prefect deployment run --watch`); its final run."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            controller_deployment().id, parameters=parameters
        )
        return poll(
            lambda: client.read_flow_run(flow_run.id),
            lambda run: run.state is not None and run.state.is_final(),
            timeout=timeout,
        )


def scheduled_runs(deployment_id: UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )


def test_a_manual_run_through_the_worker_completes_and_changes_redis(
    stack_ready: Stack, worker: Any
) -> None:
    flags = redis.Redis.from_url(stack_ready.redis.url, decode_responses=True)
    seed_flag(flags, "google", 0)
    started = time.perf_counter()

    run = run_deployment({"dry_run": False, "config_path": str(stack_ready.config_path)})

    print(f"\nmanual deployment run: {run.state.name} in {time.perf_counter() - started:.1f} s")
    assert run.state.is_completed(), run.state.message
    assert run.state.message.startswith("live:")
    assert flag_keys(flags, "google")["rollout_percent"] == "10"
    [entry] = audit_entries(flags, "google")
    assert (entry["by"], entry["dry_run"], entry["new_percent"]) == ("controller", "false", "10")


def test_a_failed_run_sends_the_notification_to_a_local_webhook(
    stack_ready: Stack, worker: Any, webhook: WebhookReceiver
) -> None:
    first = rollout("notify", "--webhook", webhook.url)
    again = rollout("notify", "--webhook", webhook.url)
    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    assert first.output.startswith("created automation rollout-controller-failed (")
    assert again.output.startswith("updated automation rollout-controller-failed (")
    automation_id = first.output.split("(")[1].split(")")[0]
    assert f"({automation_id})" in again.output  # the same automation, not a second one

    run = run_deployment(
        {"dry_run": False, "config_path": str(stack_ready.config_path), "features": ["nope"]}
    )

    assert run.state.is_failed()
    delivery = poll(lambda: list(webhook.deliveries), bool, timeout=30)[0]
    failed_at: datetime = run.state.timestamp
    print(
        f"\nFailed state -> notification POST: {delivery.arrived_at - failed_at.timestamp():.2f} s"
    )
    text = str(delivery.body)
    assert "Failed" in text and "'nope'" in text and "configuration error" in text


def test_a_paused_controller_stays_paused_across_a_redeploy_and_schedules_nothing(
    deployed: Any,
) -> None:
    from prefect.client.orchestration import get_client

    deployment = controller_deployment()
    [schedule] = deployment.schedules
    # the active schedule has runs queued (the scheduler loops every second here)
    poll(lambda: scheduled_runs(deployment.id), bool, timeout=30)
    with get_client(sync_client=True) as client:
        client.update_deployment_schedule(deployment.id, schedule.id, active=False)
        client.pause_deployment(deployment.id)
    assert scheduled_runs(deployment.id) == []

    report = rollout("deploy", "--project-dir", str(REPO_ROOT))

    redeployed = controller_deployment()
    assert report.exit_code == 0, report.output
    assert f"kept switched off as before: {CONTROLLER}" in report.output
    assert redeployed.id == deployment.id and redeployed.paused
    assert [(s.id, s.active) for s in redeployed.schedules] == [(schedule.id, False)]
    time.sleep(3)  # three scheduler loops: a re-activated schedule would have queued runs
    assert scheduled_runs(deployment.id) == []
