"""A ladder holds only steps the gate and the store can serve (review 9, R10): a finer step
is refused at load, and the finest allowed steps (0.01) are reached, never promoted to again
and again."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.errors import ConfigError
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW, audit_of, seed

CONFIG = """
features:
  f1:
    ladder: {ladder}
    dwell: 0s
    slos: [{{name: error_rate, ratio: {{errors: 'vector(0)', total: 'vector(5000)'}}, max: 0.01}}]
"""


def test_a_ladder_step_the_store_cannot_hold_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"ladder step 33\.3333333 has more than 2 decimals"):
        parse_config(CONFIG.format(ladder="[0, 33.3333333, 66.6666667, 100]"), "rollouts.yaml")


def test_a_healthy_feature_climbs_a_ladder_of_hundredths_one_step_per_pass(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "0")
    specs = parse_config(CONFIG.format(ladder="[0, 0.01, 33.33, 66.67, 100]")).select(None)
    store = RedisFlagStore(connect(redis_url))
    source = PrometheusSource(prometheus.url, timeout=3)
    for minute in range(6):
        run_pass(specs, store, source, NOW + timedelta(minutes=minute), False)
    steps = [(e["old_percent"], e["new_percent"]) for e in audit_of(client)]
    assert steps == [("0", "0.01"), ("0.01", "33.33"), ("33.33", "66.67"), ("66.67", "100")]
    assert client.get("flags:f1:rollout_percent") == "100"
