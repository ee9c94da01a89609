"""After a conflict the pass reports the percent Redis holds, not the one it read (review 9,
R9): that is what telemetry pushes as rollout_percent and the run's table shows."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from deployments.servers import RunningServer
from rollout_core.controller import decision_rows, run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.ports import ApplyResult, FlagChange
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW, ratio_spec, seed


class OperatorRacesTheWrite(RedisFlagStore):
    """The on-call's `rollout set f1 <raw>` lands between the pass's read and its write."""

    raw = "0"

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | Exception]:  # type: ignore[override]
        self.writer.set("flags:f1:rollout_percent", self.raw)
        return super().apply_many(changes)  # type: ignore[return-value]


def test_a_conflicting_pass_reports_the_percent_redis_holds(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    specs = ratio_spec("vector(0)", "vector(2000)")  # healthy: the pass wants 50 -> 100
    store = OperatorRacesTheWrite(connect(redis_url))
    outcomes = run_pass(specs, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)
    outcome = outcomes["f1"]
    assert client.get("flags:f1:rollout_percent") == "0"
    assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
    assert outcome.percent == 0.0, outcome.summary
    assert decision_rows(outcomes)[0]["after"] == "0%"


def test_a_conflict_with_an_unparsable_percent_reports_it_as_unknown(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    store = OperatorRacesTheWrite(connect(redis_url))
    store.raw = "fifty"
    specs = ratio_spec("vector(0)", "vector(2000)")
    outcomes = run_pass(specs, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)
    assert client.get("flags:f1:rollout_percent") == "fifty"
    assert outcomes["f1"].percent is None, outcomes["f1"].summary
    assert decision_rows(outcomes)[0]["after"] is None
