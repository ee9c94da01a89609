"""FAILING REPRO (review 9, defect R6): a ladder step with more than 6 decimals never
reached: the controller "promotes" to it forever.

The config accepts any finite step (`ladder: [0, 33.3333333, 66.6666667, 100]`), the store
rounds what it writes to 6 decimals ("33.333333"), and the next pass's `next_step` finds
33.3333333 still above 33.333333: every pass (after each dwell) appends another "promote
33.333333% -> 33.3333%" audit entry, resets last_change_time, and the rollout never reaches
66.67%. Wanted: config refuses (or rounds) steps the store cannot hold, or next_step compares
in the stored precision.
"""

from __future__ import annotations

from datetime import timedelta

import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW, audit_of, seed

SPECS = parse_config(
    """
features:
  f1:
    ladder: [0, 33.3333333, 66.6666667, 100]
    dwell: 0s
    slos: [{name: error_rate, ratio: {errors: 'vector(0)', total: 'vector(5000)'}, max: 0.01}]
"""
).select(None)


def test_a_healthy_feature_climbs_a_ladder_with_fine_steps(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "0")
    store = RedisFlagStore(connect(redis_url))
    source = PrometheusSource(prometheus.url, timeout=3)
    for minute in range(4):
        run_pass(SPECS, store, source, NOW + timedelta(minutes=minute), False)
    # observed: "33.333333" and four "promote" entries, three of them 33.333333 -> 33.333333
    entries = [(e["old_percent"], e["new_percent"]) for e in audit_of(client)]
    assert client.get("flags:f1:rollout_percent") == "100", entries
