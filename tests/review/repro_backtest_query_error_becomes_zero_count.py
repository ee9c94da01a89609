"""A count SLO whose query the live controller cannot read (several series) is read by the
backtest as zero failures: healthy, and it promotes.

Live (slo.PrometheusSource -> snapshot_for): a query without `sum` that returns one series per
instance is a `several_series` QueryError: the SLO is inconclusive, the feature holds, and the
run is Failed as a configuration error naming the query. The backtest reads the same Prometheus
with history.RangeReader, whose readings_frame picks each tick with the same snapshot_for but
then drops every reading whose value and samples are None, errors included ("a reading with
no series at all is no row"). ReplaySource then answers "no series", and a count SLO with
absent_is_zero (the default) reads no series as 0: healthy. So the backtest promotes to 100%
through failures the live controller would have held on (here 40 per 15 minutes against a max
of 5) and says nothing about the broken query: exactly the config the SRE then ships.

Observed: live holds with a configuration error; the backtest promotes to 100% with
"oauth_refresh_failures 0 (no series, read as 0) <= max 5: healthy". Expected: the backtest
reads the query error as the live flow does (inconclusive, no promotion), or refuses (exit 2)
naming the query and the fix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.slo import PrometheusSource
from tests.review._support import (
    iso,
    openmetrics_counters,
    prometheus_with,
    redis_server,
    rollout,
)

CONFIG = """
features:
  google:
    dwell: 10m
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(app_errors_total[10m]))
          total: sum(increase(app_requests_total[10m]))
        max: 0.01
        min_samples: 200
      - name: oauth_refresh_failures
        kind: count
        query: increase(oauth_failures_total[15m])
        max: 5
"""
START = datetime(2026, 1, 5, 10, tzinfo=UTC)
END = START + timedelta(hours=3)


def history() -> str:
    first = int(START.timestamp())
    return openmetrics_counters(
        {
            "app_requests": {'job="app"': lambda t: 100.0 * (t - first) / 60},
            "app_errors": {'job="app"': lambda t: 0.2 * (t - first) / 60},
            # two pods, each failing its OAuth refreshes at 20 per 15 minutes
            "oauth_failures": {
                'instance="pod-a"': lambda t: 20.0 * (t - first) / 900,
                'instance="pod-b"': lambda t: 20.0 * (t - first) / 900,
            },
        },
        list(range(first, int(END.timestamp()) + 1, 60)),
    )


def test_a_query_the_live_flow_cannot_read_is_not_healthy_in_the_backtest(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    spec = parse_config(CONFIG).feature("google")
    with prometheus_with(history()) as prometheus, redis_server() as server:
        store = RedisFlagStore(redis.Redis.from_url(server.url, decode_responses=True))
        store.init("google", START - timedelta(days=1), "test")
        live = run_pass(
            [spec], store, PrometheusSource(prometheus.url), START + timedelta(hours=1), False
        )["google"]
        result = rollout(
            "backtest", "google", "--start", iso(START), "--end", iso(END),
            "--config", str(config), "--json", env={"PROMETHEUS_BASE_URL": prometheus.url},
        )  # fmt: skip

    assert live.decision is not None and str(live.decision.action) == "hold"
    assert str(live.status) == "config_error", live.summary  # the live run names the query
    if result.exit_code == 0:
        changes = json.loads(result.stdout)["changes"]
        assert not [c for c in changes if c["action"] == "promote"], changes[0]["reason"]
    else:
        assert result.exit_code == 2 and "oauth_failures_total" in result.stderr, result.output
