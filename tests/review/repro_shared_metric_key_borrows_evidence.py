"""FAILING REPRO (review 9, defect R13): two features may read the same series, so one
promotes on the other's traffic (I1 evidence borrowed).

The config accepts `google-v2: {profile: gmail, metric_key: google}` next to `google` (a
copy-paste of a profile line is enough). Both then take the provider="google" series of every
grouped query: `google-v2`, which served no request of its own, is "healthy (n=2000)" and
promotes 0 -> 10 -> 50 -> 100 on google's traffic; a breach of google-v2's own code would
never show. Wanted: duplicate series keys under the same grouped query refused at load
(naming both features), unless explicitly allowed.
"""

from __future__ import annotations

import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW

ERRORS = 'sum by (provider) (label_replace(vector(0), "provider", "google", "", ""))'
TOTAL = 'sum by (provider) (label_replace(vector(2000), "provider", "google", "", ""))'
CONFIG = f"""
profiles:
  gmail:
    slos:
      - name: error_rate
        group_by: provider
        ratio: {{errors: '{ERRORS}', total: '{TOTAL}'}}
        max: 0.01
features:
  google: {{profile: gmail}}
  google-v2: {{profile: gmail, metric_key: google}}
"""


def test_a_feature_never_promotes_on_another_features_series(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    try:
        specs = parse_config(CONFIG).select(None)
    except Exception:  # the wanted behaviour: refused at load
        return
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for feature in ("google", "google-v2"):
        client.mset(
            {
                f"flags:{feature}:enabled": "true",
                f"flags:{feature}:internal_only": "false",
                f"flags:{feature}:rollout_percent": "0",
                f"flags:{feature}:paused": "false",
            }
        )
    store = RedisFlagStore(connect(redis_url))
    outcomes = run_pass(specs, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)
    # observed: "google-v2: promote 0% -> 10% (Initial canary ...; error_rate 0.0% (n=2000 ...)"
    assert client.get("flags:google-v2:rollout_percent") == "0", outcomes["google-v2"].summary
