"""FAILING REPRO (review 9, defect R4): after a conflict the pass reports the percent it read,
not the one Redis holds (I5).

The compare-and-set returns the current percent on a conflict and the hold's reason even names
it ("flag moved from 100% to 0%"), but `FeatureOutcome.percent` is the decision's from_percent,
and that is what `emit_metrics` pushes as `rollout_percent{feature}`: after an operator's
emergency `rollout set f1 0` races the controller, the dashboard and alerts read 100% until
the next pass (10 minutes later).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from deployments.servers import RunningServer
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.ports import FlagChange
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW, ratio_spec, seed


class OperatorRacesTheWrite(RedisFlagStore):
    """The on-call's `rollout set f1 0` lands between the pass's read and its write."""

    def apply_many(self, changes: Sequence[FlagChange]):  # type: ignore[no-untyped-def]
        self.set_percent("f1", 0, "emergency stop", "oncall", at=NOW)
        return super().apply_many(changes)


def test_a_conflicting_pass_reports_the_percent_redis_holds(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    specs = ratio_spec("vector(0)", "vector(2000)")  # healthy: the pass wants 50 -> 100
    store = OperatorRacesTheWrite(connect(redis_url))
    outcome = run_pass(specs, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)["f1"]
    assert client.get("flags:f1:rollout_percent") == "0"
    assert outcome.decision is not None and outcome.decision.guard == "concurrent change"
    # observed: 50.0 (what was read), while the reason itself says "moved from 50% to 0%"
    assert outcome.percent == 0.0, outcome.summary
