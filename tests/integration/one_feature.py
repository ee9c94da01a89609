"""One feature `f1` for the seam regression tests (review 9): a real Redis store, a real
Prometheus source whose SLO queries are PromQL constants (so any value can be served on demand)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from rollout_core.config import FeatureSpec, parse_config
from rollout_core.controller import FeatureOutcome, run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def ratio_spec(errors: str, total: str, extra_slos: str = "") -> list[FeatureSpec]:
    text = (
        "features:\n  f1:\n    slos:\n      - name: error_rate\n"
        f"        ratio: {{errors: '{errors}', total: '{total}'}}\n        max: 0.01\n" + extra_slos
    )
    return parse_config(text).select(None)


def seed(client: redis.Redis, percent: str = "10", **extra: str) -> None:
    client.flushdb()
    client.mset(
        {
            "flags:f1:enabled": "true",
            "flags:f1:internal_only": "false",
            "flags:f1:rollout_percent": percent,
            "flags:f1:paused": "false",
            **{f"flags:f1:{key}": value for key, value in extra.items()},
        }
    )


def one_pass(
    redis_url: str, prometheus_url: str, specs: list[FeatureSpec], dry_run: bool = False
) -> FeatureOutcome:
    store = RedisFlagStore(connect(redis_url))
    source = PrometheusSource(prometheus_url, timeout=3)
    return run_pass(specs, store, source, NOW, dry_run)["f1"]


def audit_of(client: redis.Redis, feature: str = "f1") -> list[dict[str, str]]:
    return [body for _, body in client.xrange("rollout:audit") if body.get("feature") == feature]
