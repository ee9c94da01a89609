"""PushgatewayTelemetry against a real prometheus-pushgateway and a real redis-server."""

from __future__ import annotations

import logging
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deployments.servers import RunningServer
from rollout_core.model import Action
from rollout_core.telemetry import (
    CHANGES_KEY,
    LAST_SUCCESS_KEY,
    PERCENT_KEY,
    RUNS_KEY,
    PushgatewayTelemetry,
)
from tests.integration.traffic import pushed_totals

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def client(url: str) -> redis.Redis:
    """A client that fails at once when Redis is gone, as the killed-Redis test needs."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)


def test_totals_count_across_two_workers(pushgateway: RunningServer, redis_url: str) -> None:
    first = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url))
    second = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url))
    assert first.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0) == "pushed"
    later = T0 + timedelta(minutes=10)
    assert second.record_run({"google": Action.HOLD}, {"google": 10}, "ok", later) == "pushed"
    first.record_run({"google": Action.HOLD}, {"google": 10}, "ok", later + timedelta(minutes=10))
    pushed = pushed_totals(pushgateway.url)
    assert pushed.changes == {("google", "promote"): 1, ("google", "hold"): 2}
    assert pushed.runs == {"ok": 3}
    assert pushed.percents == {"google": 10}


def test_a_failed_run_does_not_move_last_success(
    pushgateway: RunningServer, redis_url: str
) -> None:
    sink = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url))
    sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)
    failed_at = T0 + timedelta(minutes=10)
    sink.record_run({}, {}, "prom_unreachable", failed_at)
    pushed = pushed_totals(pushgateway.url)
    assert pushed.last_success == T0.timestamp()
    assert pushed.last_run == failed_at.timestamp()
    assert pushed.runs == {"ok": 1, "prom_unreachable": 1}


def test_a_killed_pushgateway_is_a_warning_not_an_exception(
    pushgateway: RunningServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url), timeout=2)
    pushgateway.kill()
    with caplog.at_level(logging.WARNING, logger="rollout_core.telemetry"):
        status = sink.record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0)
    assert status == "pushgateway unreachable: connection refused"
    assert "pushgateway" in caplog.text and "unreachable" in caplog.text
    assert client(redis_url).hget("rollout:telemetry:runs_total", "ok") == b"1"


def test_a_killed_redis_still_shows_redis_error_on_the_pushgateway(
    pushgateway: RunningServer, own_redis: RunningServer
) -> None:
    sink = PushgatewayTelemetry(
        pushgateway.url, redis_client=client(own_redis.url), redis_retry_delays=(0.1,)
    )
    sink.record_run({"google": Action.PROMOTE}, {"google": 10}, "ok", T0)
    own_redis.kill()
    failed_at = T0 + timedelta(minutes=10)
    status = sink.record_run({"google": Action.HOLD}, {"google": 10}, "redis_error", failed_at)
    assert status.startswith("pushed (redis down")
    pushed = pushed_totals(pushgateway.url)
    assert pushed.runs == {"ok": 1, "redis_error": 1}
    assert pushed.changes == {("google", "promote"): 1, ("google", "hold"): 1}
    assert pushed.last_success == T0.timestamp()
    assert pushed.last_run == failed_at.timestamp()


@pytest.mark.parametrize(
    ("command", "reported"),
    [
        (["HSET", RUNS_KEY, "ok", "abc"], f"{RUNS_KEY} ok was 'abc', not a count; reset to 0"),
        (["HSET", CHANGES_KEY, "google|hold", "2.5"], f"{CHANGES_KEY} google|hold was '2.5'"),
        (["HSET", PERCENT_KEY, "outlook", "fifty"], f"{PERCENT_KEY} outlook was 'fifty'; deleted"),
        (["SET", RUNS_KEY, "3"], f"{RUNS_KEY} could not be read as a hash"),
        (["SET", LAST_SUCCESS_KEY, "yesterday"], f"{LAST_SUCCESS_KEY} was 'yesterday'"),
    ],
    ids=["text count", "decimal count", "text percent", "string key", "text time"],
)
def test_a_corrupt_total_in_real_redis_is_repaired_and_reported_not_raised(
    pushgateway: RunningServer, redis_url: str, command: list[str], reported: str
) -> None:
    client(redis_url).execute_command(*command)
    sink = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url))
    status = sink.record_run({"google": Action.HOLD}, {"google": 10}, "error", T0)
    assert reported in status and status.endswith("; pushed")
    pushed = pushed_totals(pushgateway.url)
    assert pushed.runs == {"error": 1}
    assert pushed.changes == {("google", "hold"): 1}
    assert pushed.percents == {"google": 10}
    assert pushed.last_success is None
    later = T0 + timedelta(minutes=10)
    assert sink.record_run({"google": Action.HOLD}, {"google": 10}, "ok", later) == "pushed"
    assert pushed_totals(pushgateway.url).runs == {"ok": 1, "error": 1}


def test_the_first_run_puts_every_status_at_zero_on_the_real_pushgateway(
    pushgateway: RunningServer, redis_url: str
) -> None:
    sink = PushgatewayTelemetry(pushgateway.url, redis_client=client(redis_url))
    assert sink.record_run({"google": Action.HOLD}, {"google": 10}, "ok", T0) == "pushed"
    with urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for status, count in {"ok": 1, "prom_unreachable": 0, "redis_error": 0, "error": 0}.items():
        labels = f'instance="",job="rollout_controller",status="{status}"'
        series = f"rollout_controller_runs_total{{{labels}}}"
        assert f"{series} {count}" in text, text
