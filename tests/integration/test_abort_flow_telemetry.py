"""The last success's telemetry, through the controller flow and the CLI (Prefect test server,
real Redis, Prometheus and Pushgateway): a fast-abort run, an in-process pass and a
`rollout run` count in the totals but never refresh the last success, which only a run the
deployment's schedule created moves (proved with the real scheduler in
tests/e2e/test_deployed_controller.py), so a controller whose schedule is broken is seen as
stalled (RolloutControllerStalled) whatever else runs it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

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
