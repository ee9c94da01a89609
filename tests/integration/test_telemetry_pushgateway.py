"""PushgatewayTelemetry against a real prometheus-pushgateway and a real redis-server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deployments.servers import RunningServer
from rollout_core.model import Action
from rollout_core.telemetry import PushgatewayTelemetry
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
    sink = PushgatewayTelemetry(pushgateway.url, redis_client=client(own_redis.url))
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
