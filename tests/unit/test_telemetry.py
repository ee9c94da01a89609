"""PushgatewayTelemetry: totals in Redis (fakeredis), the whole set pushed (a stub gateway)."""

from __future__ import annotations

import logging
import threading
import urllib.error
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import fakeredis
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rollout_core.model import Action
from rollout_core.telemetry import (
    CHANGES_KEY,
    LAST_RUN_KEY,
    LAST_SUCCESS_KEY,
    PERCENT_KEY,
    RUNS_KEY,
    PushgatewayTelemetry,
    Totals,
    registry_for,
    totals_from_exposition,
)

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
JOB = "rollout_controller"


class StubGateway:
    """Keeps the last pushed group and serves it back the way a Pushgateway's /metrics does."""

    def __init__(self) -> None:
        self.pushed: list[str] = []
        self.down = False

    def push(self, gateway: str, *, job: str, registry: CollectorRegistry, **_: Any) -> None:
        if self.down:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        self.pushed.append(generate_latest(registry).decode())

    def read(self, gateway: str, timeout: float, auth: tuple[str, str] | None) -> str:
        if self.down:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_WithJobLabels(self.pushed[-1] if self.pushed else ""))
        return generate_latest(registry).decode()

    @property
    def last(self) -> Totals:
        return totals_from_exposition(self.read("", 1, None), JOB)


class _WithJobLabels:
    def __init__(self, text: str) -> None:
        self.text = text

    def collect(self) -> Iterator[Metric]:
        for family in text_string_to_metric_families(self.text):
            copy = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                labels = {**sample.labels, "job": JOB, "instance": ""}
                copy.add_sample(sample.name, labels, sample.value)
            yield copy


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def gateway() -> StubGateway:
    return StubGateway()


@pytest.fixture
def worker(
    server: fakeredis.FakeServer, gateway: StubGateway
) -> Callable[[], PushgatewayTelemetry]:
    """A new telemetry object per call: another worker process sharing Redis and gateway."""

    def make() -> PushgatewayTelemetry:
        return PushgatewayTelemetry(
            "http://127.0.0.1:9091",
            redis_client=fakeredis.FakeRedis(server=server),
            push=gateway.push,
            read_gateway=gateway.read,
            redis_retry_delays=(),  # Redis down stays down here: no waits for a failover
        )

    return make


def test_totals_count_across_runs_and_across_workers(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    assert worker().record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0) == "pushed"
    worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0 + timedelta(minutes=10))
    worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0 + timedelta(minutes=20))
    pushed = gateway.last
    assert pushed.changes == {("google", "promote"): 1, ("google", "hold"): 2}
    assert pushed.runs == {"ok": 3}


def test_a_run_of_one_feature_still_pushes_every_features_totals(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    sink = worker()
    both = {"google": Action.PROMOTE, "outlook": Action.ROLLBACK}
    sink.record_run(both, {"google": 10, "outlook": 10}, "ok", T0)
    sink.record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0 + timedelta(minutes=10))
    pushed = gateway.last
    assert pushed.percents == {"google": 10, "outlook": 10}
    assert pushed.changes[("outlook", "rollback")] == 1


def test_last_success_moves_only_when_a_run_succeeds(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    sink = worker()
    sink.record_run({}, {}, "ok", T0)
    failed_at = T0 + timedelta(minutes=10)
    sink.record_run({}, {}, "prom_unreachable", failed_at)
    pushed = gateway.last
    assert pushed.last_success == T0.timestamp()
    assert pushed.last_run == failed_at.timestamp()
    assert pushed.runs == {"ok": 1, "prom_unreachable": 1}


def test_a_fast_abort_run_counts_but_does_not_move_last_success(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0)
    aborted_at = T0 + timedelta(minutes=40)
    status = worker().record_run(
        {"google": Action.ROLLBACK}, {"google": 5}, "ok", aborted_at, scheduled=False
    )
    assert status == "pushed"
    pushed = gateway.last
    assert pushed.last_success == T0.timestamp()
    assert pushed.last_run == aborted_at.timestamp()
    assert pushed.runs == {"ok": 2}
    assert pushed.changes == {("google", "hold"): 1, ("google", "rollback"): 1}
    assert pushed.percents == {"google": 5}
    assert fakeredis.FakeRedis(server=server).get(LAST_SUCCESS_KEY) == repr(T0.timestamp()).encode()


def test_a_fast_abort_run_alone_pushes_no_last_success(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    worker().record_run({"google": Action.ROLLBACK}, {"google": 5}, "ok", T0, scheduled=False)
    assert gateway.last.last_success is None
    assert "last_success_timestamp_seconds" not in gateway.pushed[-1]
    assert gateway.last.runs == {"ok": 1}


def test_no_last_success_is_pushed_before_any_run_succeeded(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    worker().record_run({}, {}, "error", T0)
    assert gateway.last.last_success is None
    assert "last_success_timestamp_seconds" not in gateway.pushed[-1]


def test_the_pushed_metrics_have_the_documented_names_and_help() -> None:
    totals = Totals({("google", "promote"): 2}, {"ok": 3}, {"google": 50.0}, 1.0, 2.0)
    text = generate_latest(registry_for(totals)).decode()
    assert 'rollout_controller_changes_total{feature="google",result="promote"} 2.0' in text
    assert 'rollout_controller_runs_total{status="ok"} 3.0' in text
    assert 'rollout_controller_percent{feature="google"} 50.0' in text
    assert "rollout_controller_last_success_timestamp_seconds 1.0" in text
    assert "rollout_controller_last_run_timestamp_seconds 2.0" in text
    helps = [line for line in text.splitlines() if line.startswith("# HELP")]
    assert len(helps) == 5
    assert all(len(line.split(" ", 3)[3]) > 20 for line in helps)


def test_a_down_pushgateway_is_a_warning_and_redis_still_counts(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway.down = True
    with caplog.at_level(logging.WARNING):
        status = worker().record_run({"google": Action.HOLD}, {"google": 0}, "ok", T0)
    assert status == "pushgateway unreachable: connection refused"
    assert "unreachable" in caplog.text
    assert fakeredis.FakeRedis(server=server).hgetall(RUNS_KEY) == {b"ok": b"1"}


def test_an_unset_pushgateway_is_a_warning_and_redis_still_counts(
    server: fakeredis.FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://127.0.0.1:9")  # the sink must not read it
    sink = PushgatewayTelemetry("", redis_client=fakeredis.FakeRedis(server=server))
    with caplog.at_level(logging.WARNING):
        assert sink.record_run({}, {}, "ok", T0) == "pushgateway not configured"
    assert "PUSHGATEWAY_URL is not set" in caplog.text
    assert fakeredis.FakeRedis(server=server).hgetall(RUNS_KEY) == {b"ok": b"1"}


def test_every_status_and_result_is_pushed_from_zero_on_the_first_run(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    """So the first failure of a kind is a 0 -> 1 step that increase() can see."""
    worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0)
    text = gateway.pushed[-1]
    assert 'rollout_controller_runs_total{status="ok"} 1.0' in text
    for status in ("prom_unreachable", "redis_error", "error"):
        assert f'rollout_controller_runs_total{{status="{status}"}} 0.0' in text
    assert gateway.last.runs == {"ok": 1}
    for result in ("promote", "rollback"):
        assert f'changes_total{{feature="google",result="{result}"}} 0.0' in text
    assert 'changes_total{feature="google",result="hold"} 1.0' in text
    assert gateway.last.changes == {("google", "hold"): 1}
    worker().record_run({}, {}, "redis_error", T0 + timedelta(minutes=10))
    assert gateway.last.runs == {"ok": 1, "redis_error": 1}


def test_with_redis_down_the_gateway_totals_plus_this_run_are_pushed(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    worker().record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)
    server.connected = False
    failed_at = T0 + timedelta(minutes=10)
    status = worker().record_run({"google": Action.HOLD}, {"google": 10}, "redis_error", failed_at)
    assert status.startswith("pushed (redis down")
    pushed = gateway.last
    assert pushed.runs == {"ok": 1, "redis_error": 1}
    assert pushed.changes == {("google", "promote"): 1, ("google", "hold"): 1}
    assert pushed.last_success == T0.timestamp()
    assert pushed.last_run == failed_at.timestamp()
    assert pushed.percents == {"google": 10}


def test_counts_made_while_redis_was_down_join_redis_when_it_returns(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    sink = worker()
    server.connected = False
    sink.record_run({"google": Action.HOLD}, {"google": 10}, "redis_error", T0)
    server.connected = True
    assert sink.record_run({}, {}, "ok", T0 + timedelta(minutes=10)) == "pushed"
    assert gateway.last.runs == {"redis_error": 1, "ok": 1}
    assert gateway.last.changes == {("google", "hold"): 1}
    assert sink.pending == Totals()


def test_redis_and_pushgateway_both_down_is_still_no_exception(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    server.connected = False
    gateway.down = True
    status = worker().record_run({"google": Action.HOLD}, {"google": 10}, "redis_error", T0)
    assert status.startswith("pushgateway unreachable")


def test_an_unknown_status_is_counted_as_error(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    worker().record_run({}, {}, "exploded", T0)
    assert gateway.last.runs == {"error": 1}


class CapturePush(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(("PUT", self.path, self.headers.get("Authorization")))
        self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_basic_auth_from_the_url_is_sent_but_never_logged(
    server: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), CapturePush)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    CapturePush.requests = []
    try:
        url = f"http://pusher:s3cret@127.0.0.1:{http.server_address[1]}"
        sink = PushgatewayTelemetry(url, redis_client=fakeredis.FakeRedis(server=server))
        with caplog.at_level(logging.WARNING):
            status = sink.record_run({}, {}, "ok", T0)
    finally:
        http.shutdown()
        http.server_close()
    assert CapturePush.requests == [
        ("PUT", "/metrics/job/rollout_controller", "Basic cHVzaGVyOnMzY3JldA==")
    ]
    assert status == "pushgateway unreachable: HTTP 401"
    assert "s3cret" not in caplog.text and "***@127.0.0.1" in caplog.text


def test_explicit_basic_auth_is_sent_and_the_environment_is_not_read(
    server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_USERNAME", "from-env")
    monkeypatch.setenv("PUSHGATEWAY_PASSWORD", "from-env")
    http = ThreadingHTTPServer(("127.0.0.1", 0), CapturePush)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    CapturePush.requests = []
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}"
        redis_client = fakeredis.FakeRedis(server=server)
        PushgatewayTelemetry(url, redis_client=redis_client, auth=("pusher", "s3cret")).record_run(
            {}, {}, "ok", T0
        )
        PushgatewayTelemetry(url, redis_client=redis_client).record_run({}, {}, "ok", T0)
    finally:
        http.shutdown()
        http.server_close()
    assert [authorization for _, _, authorization in CapturePush.requests] == [
        "Basic cHVzaGVyOnMzY3JldA==",
        None,
    ]


# A stray value in each persisted total, as `redis-cli` can leave it: (the command that
# corrupts it, the words the status must carry, the key and what it holds once repaired).
CORRUPTIONS = {
    "a run count that is text": (
        ["HSET", RUNS_KEY, "ok", "abc"],
        f"{RUNS_KEY} ok was 'abc', not a count; reset to 1",
        (RUNS_KEY, {b"ok": b"1"}),
    ),
    "a decision count that is a decimal": (
        ["HSET", CHANGES_KEY, "google|hold", "1.5"],
        f"{CHANGES_KEY} google|hold was '1.5', not a count; reset to 1",
        (CHANGES_KEY, {b"google|hold": b"1"}),
    ),
    "a run count at the end of Redis' integer range": (
        ["HSET", RUNS_KEY, "ok", "9223372036854775807"],
        f"{RUNS_KEY} ok was '9223372036854775807', not a count; reset to 1",
        (RUNS_KEY, {b"ok": b"1"}),
    ),
    "another feature's percent that is text": (
        ["HSET", PERCENT_KEY, "outlook", "fifty"],
        f"{PERCENT_KEY} outlook was 'fifty'; deleted",
        (PERCENT_KEY, {b"google": b"10.0"}),
    ),
    "a run counts key that is not a hash": (
        ["SET", RUNS_KEY, "3"],
        f"{RUNS_KEY} could not be read as a hash",
        (RUNS_KEY, {b"ok": b"1"}),
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupt_persisted_total_is_reported_and_repaired_never_raised(
    case: str,
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    command, reported, (key, repaired) = CORRUPTIONS[case]
    client = fakeredis.FakeRedis(server=server)
    client.execute_command(*command)
    status = worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0)
    assert reported in status and status.endswith("; pushed")
    assert client.hgetall(key) == repaired
    assert "outlook" not in gateway.last.percents
    assert gateway.last.runs == {"ok": 1}
    later = T0 + timedelta(minutes=10)
    assert worker().record_run({"google": Action.HOLD}, {"google": 10}, "ok", later) == "pushed"
    assert gateway.last.runs == {"ok": 2}


def test_a_corrupt_last_success_time_is_deleted_and_not_pushed(
    worker: Callable[[], PushgatewayTelemetry],
    gateway: StubGateway,
    server: fakeredis.FakeServer,
) -> None:
    client = fakeredis.FakeRedis(server=server)
    client.set(LAST_SUCCESS_KEY, "yesterday")
    status = worker().record_run({}, {}, "error", T0)
    assert f"{LAST_SUCCESS_KEY} was 'yesterday', not Unix seconds; deleted" in status
    assert client.get(LAST_SUCCESS_KEY) is None
    assert gateway.last.last_success is None
    assert gateway.last.last_run == T0.timestamp()
    assert client.get(LAST_RUN_KEY) == repr(T0.timestamp()).encode()


def test_a_percent_that_is_not_a_number_is_left_out_and_named(
    worker: Callable[[], PushgatewayTelemetry], gateway: StubGateway
) -> None:
    percents: dict[str, Any] = {"google": float("nan"), "outlook": "abc", "yahoo": 50}
    status = worker().record_run({}, percents, "ok", T0)
    assert "percent of google is nan, not a number; not reported" in status
    assert "percent of outlook is 'abc', not a number; not reported" in status
    assert gateway.last.percents == {"yahoo": 50}


def test_an_unexpected_error_in_the_push_is_a_status_not_an_exception(
    server: fakeredis.FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_push(gateway: str, **_: Any) -> None:
        raise RuntimeError("registry exploded")

    sink = PushgatewayTelemetry(
        "http://127.0.0.1:9091", redis_client=fakeredis.FakeRedis(server=server), push=broken_push
    )
    with caplog.at_level(logging.ERROR):
        status = sink.record_run({}, {}, "ok", T0)
    assert status == "telemetry not recorded: RuntimeError: registry exploded"
    assert "registry exploded" in caplog.text


def test_a_gateway_copy_with_a_missing_label_is_read_without_it(
    server: fakeredis.FakeServer,
) -> None:
    text = (
        "# TYPE rollout_controller_runs_total counter\n"
        'rollout_controller_runs_total{job="rollout_controller",instance=""} 4\n'
        'rollout_controller_runs_total{job="rollout_controller",instance="",status="ok"} 2\n'
    )
    assert totals_from_exposition(text, JOB).runs == {"ok": 2}


def test_a_repair_that_cannot_be_written_is_named_and_the_next_run_repairs_it(
    gateway: StubGateway, server: fakeredis.FakeServer
) -> None:
    class RedisLostAfterTheRead(fakeredis.FakeRedis):
        """Redis answers the totals' transaction, then is gone for the repair."""

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = super().pipeline(transaction, shard_hint)
            if self.pipelines_made == 1:
                server.connected = False
            self.pipelines_made += 1
            return pipe

        pipelines_made = 0

    fakeredis.FakeRedis(server=server).hset(RUNS_KEY, "error", "three")
    sink = PushgatewayTelemetry(
        "http://127.0.0.1:9091",
        redis_client=RedisLostAfterTheRead(server=server),
        push=gateway.push,
        read_gateway=gateway.read,
    )
    status = sink.record_run({}, {}, "ok", T0)
    assert f"corrupt total {RUNS_KEY} error was 'three', not a count; reset to 0" in status
    assert "the repair was not written (ConnectionError" in status
    assert gateway.last.runs == {"ok": 1}
    server.connected = True
    later = sink.record_run({}, {}, "ok", T0 + timedelta(minutes=10))
    assert "error was 'three'" in later and later.endswith("; pushed")
    assert fakeredis.FakeRedis(server=server).hgetall(RUNS_KEY) == {b"ok": b"2", b"error": b"0"}


class FailingOnce(fakeredis.FakeRedis):
    """Redis whose first totals' write fails: `landed` says whether it reached Redis before
    the connection broke (a lost reply) or not (refused), as in a failover mid-write."""

    landed = False
    failures = 1

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        if not transaction or FailingOnce.failures == 0:
            return pipe
        execute = pipe.execute

        def fail(raise_on_error: bool = True) -> Any:
            FailingOnce.failures -= 1
            if FailingOnce.landed:
                execute(raise_on_error)
            raise redis.ConnectionError("Connection closed by server.")

        pipe.execute = fail
        return pipe


def failing_sink(server: fakeredis.FakeServer, gateway: StubGateway) -> PushgatewayTelemetry:
    """A sink on FailingOnce, retrying twice without waiting."""
    return PushgatewayTelemetry(
        "http://127.0.0.1:9091",
        redis_client=FailingOnce(server=server),
        push=gateway.push,
        read_gateway=gateway.read,
        redis_retry_delays=(0.0, 0.0),
    )


@pytest.mark.parametrize("landed", [True, False], ids=["reply lost", "write refused"])
def test_a_failover_during_the_totals_write_counts_the_run_exactly_once(
    server: fakeredis.FakeServer, gateway: StubGateway, landed: bool
) -> None:
    FailingOnce.landed, FailingOnce.failures = landed, 1
    sink = failing_sink(server, gateway)

    status = sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)

    assert status == "pushed"
    assert sink.pending == Totals()
    stored = fakeredis.FakeRedis(server=server)
    assert stored.hgetall(CHANGES_KEY) == {b"google|promote": b"1"}
    assert stored.hgetall(RUNS_KEY) == {b"ok": b"1"}
    assert gateway.last.changes == {("google", "promote"): 1}


def test_redis_down_through_every_retry_keeps_the_counts_owed(
    server: fakeredis.FakeServer, gateway: StubGateway
) -> None:
    FailingOnce.landed, FailingOnce.failures = False, 3
    sink = failing_sink(server, gateway)

    status = sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)

    assert status.startswith("pushed (redis down")
    assert sink.pending.changes == {("google", "promote"): 1}
    assert fakeredis.FakeRedis(server=server).hgetall(CHANGES_KEY) == {}
