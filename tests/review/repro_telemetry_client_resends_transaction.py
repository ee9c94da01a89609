"""Review repro: the totals' MULTI/EXEC is re-sent by redis-py itself, under the marker.

bootstrap wires `PushgatewayTelemetry(..., redis_client=client)` with the client of
`redis_connection.connect()`, which carries the READ retry budget
(`Retry(ExponentialBackoff(cap=0.2, base=0.05), RETRIES)`); the flag store writes through
`without_retries()` precisely because a lost reply must never be resent. redis-py's
`Pipeline.execute` runs the whole transaction under `conn.retry.call_with_retry`, so when EXEC
lands and its reply is lost (a socket timeout, a reset), redis-py re-sends MULTI ... EXEC on a new
connection before `_persist` sees any error: the marker check (52da93e) never runs and the
run's counts are added twice.

Observed: one run with one promotion leaves rollout:telemetry changes google|promote == 2,
runs ok == 2. Expected: 1 and 1 (the totals' write goes through a client without retries, so
a lost reply reaches the marker check).

Run: .venv/bin/python -m pytest tests/review/repro_telemetry_client_resends_transaction.py -q
"""

from __future__ import annotations

from typing import Any

import fakeredis
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rollout_core.model import Action
from rollout_core.redis_connection import RETRIES, connect
from rollout_core.telemetry import CHANGES_KEY, RUNS_KEY, PushgatewayTelemetry
from tests.unit.test_telemetry import T0, StubGateway


class LosesOneExecReply(fakeredis.FakeRedisConnection):
    """Redis applies the transaction; its EXEC reply (the one array reply) is lost, once."""

    lose = True

    def read_response(self, **kwargs: Any) -> Any:
        response = super().read_response(**kwargs)
        if LosesOneExecReply.lose and isinstance(response, list):
            LosesOneExecReply.lose = False
            self.disconnect()
            raise redis.TimeoutError("Timeout reading from socket")
        return response


def test_a_lost_exec_reply_counts_the_run_once() -> None:
    wired = connect("redis://127.0.0.1:1/0")  # what bootstrap gives the telemetry; sends nothing
    assert wired.connection_pool.make_connection().retry.get_retries() == RETRIES > 0
    server = fakeredis.FakeServer()
    LosesOneExecReply.lose = True
    client = fakeredis.FakeRedis(
        server=server,
        decode_responses=True,
        connection_class=LosesOneExecReply,
    )
    # as connect() makes it (fakeredis drops a `retry` keyword, so it goes on the connections)
    client.connection_pool.connection_kwargs["retry"] = Retry(
        ExponentialBackoff(cap=0.2, base=0.05), RETRIES
    )
    gateway = StubGateway()
    sink = PushgatewayTelemetry(
        "http://127.0.0.1:9091",
        redis_client=client,
        push=gateway.push,
        read_gateway=gateway.read,
        redis_retry_delays=(0.0,),
    )

    sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)

    assert not LosesOneExecReply.lose  # the reply was lost once
    stored = fakeredis.FakeRedis(server=server)
    assert stored.hgetall(RUNS_KEY) == {b"ok": b"1"}
    assert stored.hgetall(CHANGES_KEY) == {b"google|promote": b"1"}
