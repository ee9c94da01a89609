"""R15 defect: the write memory (ROLLOUT_WRITE_MEMORY, tasks/write_memory.py) loses updates
when two live runs overlap, which the HA stack allows: the abort deployment has no
concurrency limit and two workers serve it beside the scheduled controller. Each run loads
the Prefect Variable at its start and `remember_writes` writes back its own whole copy for
the Redis target (value[target] = this run's memory), so the run that finishes last replaces
a newer audit id saved by the other with the older one it loaded. The lost write is then
no longer refused: the next run decides on the older state the issue forbids.

Real redis-server, Prefect's test server for the Variable; the tasks' own functions (.fn).
Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from deployments.servers import start_redis
from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.redis_connection import connect
from tasks.write_memory import MEMORY_VARIABLE, recall_writes, remember_writes

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_an_overlapping_run_never_replaces_a_newer_remembered_write_with_an_older_one(
    tmp_path: Path,
) -> None:
    from prefect.testing.utilities import prefect_test_harness
    from prefect.variables import Variable

    server = start_redis(tmp_path / "redis")
    try:
        with prefect_test_harness(server_startup_timeout=120):
            target = server.url
            first = RedisFlagStore(connect(server.url))
            first.init("google", T0)
            w1 = first.set_percent("google", 10, "ramp", at=T0)
            remember_writes.fn(first, target)  # an earlier run: memory {google: w1}

            scheduled = RedisFlagStore(connect(server.url))  # the scheduled controller run
            abort = RedisFlagStore(connect(server.url))  # the abort run, on the other worker
            recall_writes.fn(scheduled, target)
            recall_writes.fn(abort, target)
            w2 = abort.set_percent(
                "google", 0, "abort: GmailErrorRateFast", at=T0 + timedelta(minutes=1)
            )
            assert w2.applied
            remember_writes.fn(abort, target)  # saved {google: w2}
            remember_writes.fn(scheduled, target)  # held google; finishes last

            saved = Variable.get(MEMORY_VARIABLE)
            # a failover now loses w2; only the memory can refuse the older state
            connect(server.url).hset(LAST_WRITE_HASH, "google", f"x {w1.audit_id}")
            later = RedisFlagStore(connect(server.url))
            recall_writes.fn(later, target)
            state = later.read_each(["google"])["google"]
            assert saved[target]["google"] == w2.audit_id, (
                f"memory holds {saved[target]['google']} (the older w1={w1.audit_id}), "
                f"the abort's w2={w2.audit_id} is forgotten"
            )
            assert isinstance(state, Exception), "the run after the failover decides on w1's state"
    finally:
        server.stop()
