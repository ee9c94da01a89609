"""Impossible readings are no data, never healthy evidence (review 9, R6), through the real
PrometheusSource on a real Prometheus: a negative error count or failure count, and a PromQL
string result (a configuration error on that SLO)."""

from __future__ import annotations

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from tests.integration.one_feature import audit_of, one_pass, ratio_spec, seed


@pytest.mark.parametrize("errors", ["vector(-100)", '"0"'])
def test_an_impossible_error_count_never_promotes(
    redis_url: str, prometheus_factory, errors: str
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    outcome = one_pass(redis_url, prometheus.url, ratio_spec(errors, "vector(2000)"))
    assert client.get("flags:f1:rollout_percent") == "10", outcome.summary
    assert audit_of(client) == []
    expected = "is negative" if errors.startswith("vector") else "a string"
    assert expected in outcome.summary, outcome.summary


def test_a_negative_failure_count_is_no_data_not_healthy(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    specs = parse_config(
        """
features:
  f1:
    slos:
      - {name: error_rate, ratio: {errors: 'vector(0)', total: 'vector(2000)'}, max: 0.01}
      - {name: oauth_failures, kind: count, query: 'vector(-3)', max: 5}
"""
    ).select(None)
    outcome = one_pass(redis_url, prometheus.url, specs)
    assert client.get("flags:f1:rollout_percent") == "10", outcome.summary
    assert "count -3 is negative" in outcome.summary, outcome.summary
