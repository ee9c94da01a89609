"""The last success's telemetry, through the controller flow and the CLI (Prefect test server,
real Redis, Prometheus and Pushgateway): a fast-abort run, an in-process pass and a
`rollout run` count in the totals but never refresh the last success, which only a run the
deployment's schedule created moves (here: runs Prefect's server generates from a deployment's
schedule; with the scheduler loop and a real worker: tests/e2e/test_deployed_controller.py),
so a controller whose schedule is broken is seen as stalled (RolloutControllerStalled)
whatever else runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis
from typer.testing import CliRunner

from flows.controller import rollout_controller
from rollout_cli.main import app
from rollout_core.abort import Alert
from rollout_core.model import Action
from rollout_core.telemetry import LAST_RUN_KEY, LAST_SUCCESS_KEY
from tests.integration.conftest import seed_flag, write_config
from tests.integration.test_abort_redis import ALERT
from tests.integration.traffic import pushed_totals

pytestmark = pytest.mark.integration


def run(config: Path, alert: Alert | None = None) -> Any:
    return rollout_controller(
        dry_run=False,
        config_path=str(config),
        alert=alert.as_parameter() if alert is not None else None,
        return_state=True,
    )


def test_an_abort_run_and_a_manual_pass_are_counted_but_neither_refreshes_the_last_success(
    flags: redis.Redis, tmp_path: Path, controller_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, {"google": {"abort_on": ["GmailErrorRateFast"]}})
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))

    aborted = run(config, ALERT)

    assert aborted.is_completed(), aborted.message
    assert flags.get("flags:google:rollout_percent") == "10"  # rolled back to its safe step
    after_abort = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert after_abort.runs == {"ok": 1}
    assert after_abort.changes == {("google", str(Action.ROLLBACK)): 1}
    assert after_abort.last_run is not None
    assert after_abort.last_success is None

    manual = run(config)  # in-process: a flow run no schedule created

    assert manual.is_completed(), manual.message
    after_pass = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert after_pass.runs == {"ok": 2}
    assert after_pass.last_run is not None and after_pass.last_run > after_abort.last_run
    assert after_pass.last_success is None
    assert flags.get(LAST_RUN_KEY) is not None
    assert flags.get(LAST_SUCCESS_KEY) is None


def test_a_dry_run_from_the_terminal_is_counted_but_does_not_refresh_the_last_success(
    flags: redis.Redis, tmp_path: Path, controller_env: dict[str, str]
) -> None:
    """An on-call's `rollout run --dry-run` on a stalled controller must not clear the page."""
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))

    result = CliRunner().invoke(app, ["run", "--dry-run", "-f", "google", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert flags.get(LAST_RUN_KEY) is not None  # the run was counted
    pushed = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert pushed.runs == {"ok": 1}
    assert pushed.last_run is not None
    assert flags.get(LAST_SUCCESS_KEY) is None
    assert pushed.last_success is None


def scheduled_run_due_now(config: Path) -> Any:
    """A deployment of the controller with its 10-minute interval schedule; Prefect's server
    generates its runs (auto_scheduled, as the scheduler service does), and the first one is
    made due now rather than at its slot up to 10 minutes away. Returns that flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.states import Scheduled

    every_10_minutes = IntervalSchedule(interval=timedelta(minutes=10))
    with get_client(sync_client=True) as client:
        deployment_id: UUID = client.create_deployment(
            flow_id=client.create_flow_from_name(rollout_controller.name),
            name=f"scheduled-{uuid4().hex[:8]}",
            entrypoint="flows/controller.py:rollout_controller",
            schedules=[DeploymentScheduleCreate(schedule=every_10_minutes, active=True)],
        )
        generated = client.request(
            "POST",
            "/deployments/{id}/schedule",
            path_params={"id": deployment_id},
            json={"min_runs": 1},
        )
        assert generated.status_code == 200, generated.text
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        first = min(runs, key=lambda run: run.expected_start_time)
        client.update_flow_run(first.id, parameters={"dry_run": False, "config_path": str(config)})
        client.set_flow_run_state(first.id, Scheduled(scheduled_time=datetime.now(UTC)), force=True)
        return client.read_flow_run(first.id)


def test_a_run_the_deployment_schedule_created_refreshes_the_last_success(
    flags: redis.Redis, tmp_path: Path, controller_env: dict[str, str]
) -> None:
    from prefect.flow_engine import run_flow

    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))
    scheduled = scheduled_run_due_now(config)
    assert scheduled.auto_scheduled and "auto-scheduled" in scheduled.tags

    final = run_flow(
        rollout_controller,
        flow_run=scheduled,
        parameters=scheduled.parameters,
        return_type="state",
    )

    assert final.is_completed() and final.name == "Completed", final.message
    pushed = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert pushed.runs == {"ok": 1}
    assert pushed.last_success is not None
    assert pushed.last_success == pushed.last_run
    assert flags.get(LAST_SUCCESS_KEY) == flags.get(LAST_RUN_KEY)
