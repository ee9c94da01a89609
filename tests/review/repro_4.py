"""Review of int3, item 2 (only the scheduled pass moves last_success): a `rollout run` from
a terminal, even a dry run, refreshes `rollout:telemetry:last_success` and the pushed
`rollout_controller_last_success_timestamp_seconds`, so it clears RolloutControllerStalled
while the schedule is still broken.

The flow decides "scheduled" as `abort is None`: every run without an `alert` parameter counts
as the scheduled pass, whether Prefect's scheduler started it or not. telemetry.py and
docs/architecture.md now say last_success is "the last scheduled run with status ok", and the
change exists so that "a controller whose schedule is broken ... does not look healthy"; yet
an on-call who runs `rollout run --dry-run` (or a Quick run of either deployment) to look at
the stalled controller silences the page for 30+7 minutes with the schedule still paused,
Late or without a worker. (The runbook's "Resolved when" leans on the same hole: a manual
`prefect deployment run` resolves the alert whatever the schedule does.) The flow can tell:
the flow run's deployment and `auto_scheduled`, as _stale_run_reason already reads them.

Real Redis, Prometheus, Pushgateway and Prefect test server (the integration fixtures).
Run: nice .venv/bin/python -m pytest tests/review/repro_4.py
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from rollout_cli.main import app
from rollout_core.telemetry import LAST_RUN_KEY, LAST_SUCCESS_KEY
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    controller_env,
    flags,
    gmail_prometheus,
    gmail_readings,
    gmail_traffic,
    prefect_test_server,
    seed_flag,
    write_config,
)
from tests.integration.traffic import pushed_totals

pytestmark = pytest.mark.integration


def test_a_dry_run_from_the_terminal_does_not_move_the_last_scheduled_success(
    flags: redis.Redis,  # noqa: F811
    tmp_path: Path,
    controller_env: dict[str, str],  # noqa: F811
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))

    result = CliRunner().invoke(app, ["run", "--dry-run", "-f", "google", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert flags.get(LAST_RUN_KEY) is not None  # the run was counted
    pushed = pushed_totals(controller_env["PUSHGATEWAY_URL"])
    assert pushed.runs == {"ok": 1}
    # not a scheduled pass: the stall alert must keep seeing the schedule's last success
    assert flags.get(LAST_SUCCESS_KEY) is None
    assert pushed.last_success is None
