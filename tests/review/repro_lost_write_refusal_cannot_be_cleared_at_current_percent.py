"""R15 defect: after a failover lost the controller's last write, the documented recovery
(docs/production.md: "set the percent you want again with `rollout set google 10 ...`; that
new write clears it", and the refusal's own text: "set the percent again with `rollout set`")
does nothing when the percent wanted is the one Redis kept: `rollout set` is a no-op ("already
at 10%; nothing written"), rollout:last_write stays older than the remembered audit id, and
the controller refuses the feature on every run from then on. The only ways out write
something else (move real traffic to another percent and back, or pause/resume).

Real primary + replica + three Sentinels; the loss made as in
tests/integration/test_redis_sentinel.py (replica frozen, link cut, primary killed).
Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.review.ha_helpers import cli, redis_ha, replica_of

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_the_documented_rollout_set_clears_a_lost_write_refusal_at_the_kept_percent(
    tmp_path: Path,
) -> None:
    with redis_ha(tmp_path / "redis") as ha:
        controller = RedisFlagStore(connect(ha.url), wait_timeout_ms=200)
        controller.init("google", T0)
        assert controller.set_percent("google", 10, "ramp", at=T0).applied
        replica = replica_of(ha)
        master = ha.node(ha.master_port())
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            redis.Redis(port=master.port).client_kill_filter(_type="replica")
            lost = controller.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=10))
            assert lost.applied and lost.unconfirmed
            master.kill()
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        ha.nodes.remove(master)
        ha.wait_for_master(replica.port)
        assert "Redis lost that write" in str(controller.read_each(["google"])["google"])

        # the operator keeps the percent Redis has, exactly as docs/production.md shows
        done = cli(ha, tmp_path, "set", "google", "10", "--reason", "re-set after failover")
        print(done.stdout, done.stderr)  # observed: "google: already at 10%; nothing written"

        state = controller.read_each(["google"])["google"]
        assert not isinstance(state, Exception), f"still refused after `rollout set`: {state}"
