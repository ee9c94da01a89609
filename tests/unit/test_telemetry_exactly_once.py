"""Telemetry counts a run exactly once across a lost reply: redis-py never resends the totals'
MULTI/EXEC (bootstrap wires a client without retries), and counts that landed before their
reply was lost are not owed again by the next run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fakeredis
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rollout_core.bootstrap import Settings, error_telemetry, wire
from rollout_core.model import Action
from rollout_core.redis_connection import RETRIES, without_retries
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


def test_bootstrap_gives_the_telemetry_a_client_that_never_resends() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "PUSHGATEWAY_URL": ""})
    adapters = wire(settings)  # connects lazily: sends nothing
    assert adapters.redis.connection_pool.make_connection().retry.get_retries() == RETRIES > 0
    telemetry = adapters.telemetry
    assert isinstance(telemetry, PushgatewayTelemetry)
    assert telemetry._redis.connection_pool.make_connection().retry.get_retries() == 0
    sink = error_telemetry({"REDIS_URL": "redis://127.0.0.1:1/0", "PUSHGATEWAY_URL": ""})
    assert isinstance(sink, PushgatewayTelemetry)
    assert sink._redis.connection_pool.make_connection().retry.get_retries() == 0


def test_a_lost_exec_reply_counts_the_run_once() -> None:
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
        redis_client=without_retries(client),  # as bootstrap wires it
        push=gateway.push,
        read_gateway=gateway.read,
        redis_retry_delays=(0.0,),
    )

    sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)

    assert not LosesOneExecReply.lose  # the reply was lost once
    stored = fakeredis.FakeRedis(server=server)
    assert stored.hgetall(RUNS_KEY) == {b"ok": b"1"}
    assert stored.hgetall(CHANGES_KEY) == {b"google|promote": b"1"}


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
