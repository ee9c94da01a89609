"""The fast abort's telemetry, through the controller flow (Prefect test server, real Redis,
Prometheus and Pushgateway): an abort run counts in the totals but never refreshes the last
success, so a controller whose schedule is broken but which still receives alerts is seen
as stalled (RolloutControllerStalled)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from flows.controller import rollout_controller
from rollout_core.abort import Alert
from rollout_core.model import Action
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


def test_an_abort_run_is_counted_but_only_the_scheduled_pass_refreshes_the_last_success(
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

    scheduled = run(config)

    assert scheduled.is_completed(), scheduled.message
    after_pass = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert after_pass.runs == {"ok": 2}
    assert after_pass.last_success is not None
    assert after_pass.last_success == after_pass.last_run
