"""Review repro: a failover whose lost reply's counts landed, then Redis unreachable for every
retry (Sentinel's down-after is 30 s by default; the retries wait 7.5 s in all), leaves the run's
counts owed in `pending` although they are in Redis: the next run adds them a second time
under a new marker (the old marker is never consulted again).

Observed: rollout_controller_changes_total{google,promote} == 2 and runs{ok} == 3 after two runs
that made one promotion. Expected: 1 promotion, 2 runs (the marker of the landed write is
checked before the owed counts are written again).

Run: .venv/bin/python -m pytest tests/review/repro_telemetry_double_count.py -q
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fakeredis
import redis

from rollout_core.model import Action
from rollout_core.telemetry import CHANGES_KEY, RUNS_KEY, PushgatewayTelemetry
from tests.unit.test_telemetry import T0, StubGateway


class LandsThenDown(fakeredis.FakeRedis):
    """The first totals' MULTI/EXEC reaches Redis and its reply is lost; then every call fails
    until `down` is cleared (the failover is still under way when the retries run out)."""

    down = False
    first = True

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def run(raise_on_error: bool = True) -> Any:
            if LandsThenDown.first and transaction:
                LandsThenDown.first, LandsThenDown.down = False, True
                execute(raise_on_error)  # the counts and the marker land ...
                raise redis.ConnectionError("Connection closed by server.")  # ... reply lost
            if LandsThenDown.down:
                raise redis.ConnectionError("Error 111 connecting: Connection refused.")
            return execute(raise_on_error)

        pipe.execute = run
        return pipe

    def exists(self, *names: Any) -> Any:
        if LandsThenDown.down:
            raise redis.ConnectionError("Error 111 connecting: Connection refused.")
        return super().exists(*names)


def test_counts_that_landed_before_a_lost_reply_are_not_counted_again_by_the_next_run() -> None:
    server = fakeredis.FakeServer()
    gateway = StubGateway()
    LandsThenDown.down, LandsThenDown.first = False, True
    sink = PushgatewayTelemetry(
        "http://127.0.0.1:9091",
        redis_client=LandsThenDown(server=server),
        push=gateway.push,
        read_gateway=gateway.read,
        redis_retry_delays=(0.0, 0.0),
    )

    sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)
    LandsThenDown.down = False  # the new master is elected before the next run
    sink.record_run({}, {"google": 10}, "ok", T0 + timedelta(minutes=1))

    stored = fakeredis.FakeRedis(server=server)
    assert stored.hgetall(RUNS_KEY) == {b"ok": b"2"}
    assert stored.hgetall(CHANGES_KEY) == {b"google|promote": b"1"}
