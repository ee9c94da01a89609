"""FAILING REPRO (review 9, defect R5): impossible readings count as healthy evidence.

Through the real PrometheusSource on a real Prometheus:
- a NEGATIVE error count (a `delta()`/`idelta()` or `errors - retried` query, a counter
  reset read with the wrong function) gives error_rate -5.0% "healthy" with n=2000 and the
  feature promotes 10 -> 50 with traffic evidence; docs/usage.md already calls a negative
  request count "no count", but a negative error count or ratio is accepted;
- a PromQL STRING result (`"0"`) is parsed as a scalar and promotes too, although
  `parse_result`'s own error says "a range vector or a string, not an instant vector".
Wanted: a ratio outside 0..1 from a negative count, and a string result, are no data / a
configuration error on that SLO, never healthy.
"""

from __future__ import annotations

import pytest
import redis

from deployments.servers import RunningServer
from tests.integration.one_feature import audit_of, one_pass, ratio_spec, seed


@pytest.mark.parametrize("errors", ["vector(-100)", '"0"'])
def test_an_impossible_error_count_never_promotes(
    redis_url: str, prometheus_factory, errors: str
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    outcome = one_pass(redis_url, prometheus.url, ratio_spec(errors, "vector(2000)"))
    # observed: "promote 10% -> 50% (... error_rate -5.0% (n=2000 ...) <= max 1.0%: healthy)"
    assert client.get("flags:f1:rollout_percent") == "10", outcome.summary
    assert audit_of(client) == []
