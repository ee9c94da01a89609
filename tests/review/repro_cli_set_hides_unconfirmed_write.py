"""R15 defect: an operator's `rollout set` (and the `rollout-override/manual` flow) that no
replica acknowledged (WAIT 1 timed out) is printed as a plain success. The store marks the
result `unconfirmed` with a message, but
rollout_cli.formatting.set_message shows `result.message` only for a recovered write, so the
operator is never told that a failover now would lose the change (and no counter counts it).
The controller's run does warn (`warning: durability:`); the CLI, the other write path, not.

Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.review.ha_helpers import cli, redis_ha, replica_of


def test_rollout_set_tells_the_operator_when_no_replica_acknowledged_the_change(
    tmp_path: Path,
) -> None:
    with redis_ha(tmp_path / "redis") as ha:
        assert cli(ha, tmp_path, "init", "google").returncode == 0
        replica = replica_of(ha)
        os.kill(replica.process.pid, signal.SIGSTOP)  # connected, acknowledges nothing
        try:
            done = cli(ha, tmp_path, "set", "google", "50", "--reason", "ramp",
                       ROLLOUT_REDIS_WAIT_MS="300")  # fmt: skip
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown  # applied: the change is in Redis with its audit entry
    assert "-> 50%" in shown, shown
    # observed: "google: 0% -> 50% (audit ...)" and nothing else
    assert "unconfirmed" in shown or "no replica acknowledged" in shown, shown


def test_the_override_flow_tells_the_operator_when_no_replica_acknowledged_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same in the other operator path, the `rollout-override/manual` deployment
    (flows/override.py): its message shows result.message only for a recovered write."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.override import rollout_override

    with redis_ha(tmp_path / "redis") as ha:
        assert cli(ha, tmp_path, "init", "google").returncode == 0
        monkeypatch.setenv("REDIS_URL", ha.url)
        monkeypatch.setenv("REDIS_SENTINELS", ha.sentinel_hosts)
        monkeypatch.setenv("REDIS_SENTINEL_SERVICE", "rollout")
        monkeypatch.setenv("ROLLOUT_REDIS_WAIT_MS", "300")
        monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(tmp_path / "rollout_log.md"))
        with prefect_test_harness(server_startup_timeout=120):
            replica = replica_of(ha)
            os.kill(replica.process.pid, signal.SIGSTOP)
            try:
                state = rollout_override("google", 50, "incident: hold at 50", return_state=True)
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
    assert state.is_completed() and "set to 50%" in str(state.message), state.message
    # observed: "google: set to 50% (audit ...)" and nothing else
    assert "unconfirmed" in str(state.message) or "no replica" in str(state.message), state.message
