"""The controller as users deploy it: prefect.yaml on a real Prefect server, runs picked up by
a process worker, the kill switch surviving a redeploy, and the failure notification.

The tests run in file order: the pause test comes last because it switches the controller off.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
import redis
from typer.testing import CliRunner, Result

from rollout_cli.main import app
from rollout_core.telemetry import LAST_RUN_KEY, LAST_SUCCESS_KEY
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


def run_deployment(
    parameters: dict[str, Any], timeout: float = 120, deployment: str = CONTROLLER
) -> Any:
    """A manual run through the worker (as `prefect deployment run --watch`); its final run."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            client.read_deployment_by_name(deployment).id, parameters=parameters
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


def test_only_a_run_the_schedule_created_refreshes_the_last_success(
    stack_ready: Stack, worker: Any
) -> None:
    """A manual run counts but leaves last_success alone (an on-call's look at a stalled
    controller must not clear RolloutControllerStalled); a run the real scheduler created
    (auto_scheduled), made due now instead of at its slot up to 10 minutes away, moves it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    flags = redis.Redis.from_url(stack_ready.redis.url, decode_responses=True)
    seed_flag(flags, "google", 10)
    parameters = {"dry_run": True, "config_path": str(stack_ready.config_path)}
    deployment = controller_deployment()
    with get_client(sync_client=True) as client:  # the switch on, as deployed
        for schedule in deployment.schedules:
            client.update_deployment_schedule(deployment.id, schedule.id, active=True)
        client.resume_deployment(deployment.id)
    before = flags.get(LAST_SUCCESS_KEY)

    manual = run_deployment(parameters)

    assert manual.state.is_completed(), manual.state.message
    assert not manual.auto_scheduled
    assert flags.get(LAST_RUN_KEY) is not None
    assert flags.get(LAST_SUCCESS_KEY) == before
    queued = poll(
        lambda: [run for run in scheduled_runs(deployment.id) if run.auto_scheduled],
        bool,
        timeout=30,
        what="a run created by the every-10-minutes schedule",
    )
    first = min(queued, key=lambda run: run.expected_start_time)
    with get_client(sync_client=True) as client:
        client.update_flow_run(first.id, parameters=parameters)
        client.set_flow_run_state(first.id, Scheduled(scheduled_time=datetime.now(UTC)), force=True)
        scheduled = poll(
            lambda: client.read_flow_run(first.id),
            lambda run: run.state is not None and run.state.is_final(),
            timeout=120,
        )

    assert scheduled.state.is_completed(), scheduled.state.message
    assert scheduled.state.name == "Completed"  # it acted: neither Skipped nor Cancelled
    assert scheduled.auto_scheduled
    last_success = flags.get(LAST_SUCCESS_KEY)
    assert last_success is not None and last_success != before
    assert last_success == flags.get(LAST_RUN_KEY)


def test_notify_creates_the_automations_once_and_updates_them_in_place(
    prefect_client_env: str, webhook: WebhookReceiver
) -> None:
    first = rollout("notify", "--webhook", webhook.url, "--webhook-token", "e2e-s3cret")
    again = rollout("notify", "--webhook", webhook.url, "--webhook-token", "e2e-s3cret")

    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    names = ("rollout-controller-failed", "rollout-feature-rolled-back", "rollout-feature-changed")
    created = first.output.splitlines()
    updated = again.output.splitlines()
    for name, line, line_again in zip(names, created, updated, strict=False):
        assert line.startswith(f"created automation {name} (")
        automation_id = line.split("(")[1].split(")")[0]
        assert line_again == f"updated automation {name} ({automation_id})"  # not a second one
    assert created[-1] == "notifying: http://127.0.0.1:" + webhook.url.split(":")[2].split("/")[0]
    assert "e2e-s3cret" not in first.output + again.output


def test_a_failed_run_sends_the_notification_to_a_local_webhook(
    stack_ready: Stack, worker: Any, webhook: WebhookReceiver
) -> None:
    run = run_deployment(
        {"dry_run": False, "config_path": str(stack_ready.config_path), "features": ["nope"]}
    )

    assert run.state.is_failed()
    delivery = poll(lambda: deliveries_about(webhook, "Failed"), bool, timeout=30)[0]
    failed_at: datetime = run.state.timestamp
    print(
        f"\nFailed state -> notification POST: {delivery.arrived_at - failed_at.timestamp():.2f} s"
    )
    text = str(delivery.body)
    assert "Failed" in text and "'nope'" in text and "configuration error" in text
    assert delivery.authorization == "Bearer e2e-s3cret"


def test_an_applied_rollback_notifies_the_webhook_with_the_percents_and_the_reason(
    stack_ready: Stack, worker: Any, webhook: WebhookReceiver
) -> None:
    flags = redis.Redis.from_url(stack_ready.redis.url, decode_responses=True)
    seed_flag(flags, "google", 50)
    flags.delete("rollout:audit")
    stack_ready.traffic.inject(["google"], error_rate=0.3)
    try:
        wait_until_error_ratio_above(stack_ready.prometheus.url, "google", 0.05)
        run = run_deployment({"dry_run": False, "config_path": str(stack_ready.config_path)})
    finally:
        stack_ready.traffic.inject(["google"], error_rate=0.002)

    assert run.state.is_completed(), run.state.message
    assert flag_keys(flags, "google")["rollout_percent"] == "10"
    [(entry_id, entry)] = flags.xrange("rollout:audit")
    assert (entry["feature"], entry["action"]) == ("google", "rollback")
    delivery = poll(lambda: deliveries_about(webhook, "rolled back"), bool, timeout=30)[0]
    applied_at = int(entry_id.split("-")[0]) / 1000  # Redis' clock when the CAS ran
    print(f"\napplied rollback -> notification POST: {delivery.arrived_at - applied_at:.2f} s")
    subject = delivery.body["subject"]
    assert subject == "Rollout: google rolled back 50.0% -> 10.0%"
    assert "breach" in delivery.body["body"] and entry_id in delivery.body["body"]


def test_the_manual_deployment_refuses_a_mistyped_feature_and_writes_nothing(
    stack_ready: Stack, worker: Any
) -> None:
    flags = redis.Redis.from_url(stack_ready.redis.url, decode_responses=True)
    seed_flag(flags, "google", 50)
    entries_before = flags.xlen("rollout:audit")

    run = run_deployment(
        {"feature": "googel", "percent": 0, "reason": "incident 7"},
        deployment="rollout-override/manual",
    )

    assert run.state.is_failed()
    assert run.state.message == (
        "googel: not changed: feature 'googel' is not initialised; known: google; "
        "run `rollout init googel` if it is new"
    )
    assert flags.keys("flags:googel:*") == []
    assert flags.xlen("rollout:audit") == entries_before
    assert flag_keys(flags, "google")["rollout_percent"] == "50"


def deliveries_about(webhook: WebhookReceiver, words: str) -> list[Any]:
    return [d for d in webhook.deliveries if words in str(d.body.get("subject", ""))]


def wait_until_error_ratio_above(prometheus_url: str, feature: str, ratio: float) -> None:
    from rollout_core.config import FeatureSpec
    from rollout_core.slo import PrometheusSource
    from tests.integration.conftest import GMAIL_PROFILE

    source = PrometheusSource(prometheus_url, timeout=5)
    spec = FeatureSpec.model_validate({"name": feature, **GMAIL_PROFILE})

    def error_ratio() -> float:
        snapshot = source.fetch([spec], datetime.now(UTC))[feature]
        return getattr(snapshot, "reading", lambda _: None)("error_rate").value or 0.0

    poll(error_ratio, lambda seen: seen > ratio, timeout=30)


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
