"""A gap in the Prometheus history: the backtest acts on the reading before the gap.

history.RangeReader reads exactly what Prometheus answered at each tick (no row where a query
returned nothing), but history_commands._replay then wraps those readings in a ReplaySource
with `staleness=max(step, 5m)`: at the first tick of a gap, the previous tick's reading (one
step old) is still "fresh", so the replay decides on it again. Here the service (and its
counters) stops right after an incident starts: the live controller would read no data at
12:20 and hold at 10%; the backtest rolls back a second time, 10% -> 0%, on the 12:10 reading,
and counts 12:20 as a tick with data. With --step 1m a reading is reused for up to five ticks.

Observed: two rollbacks (12:10 100->10, 12:20 10->0); no_data_ticks one short.
Expected: one rollback at 12:10, then holds with no data; every tick where Prometheus had no
value counted as a no-data tick.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import requests

from tests.review._support import iso, json_of, openmetrics_counters, prometheus_with, rollout

START = datetime(2026, 1, 5, 10, tzinfo=UTC)
INCIDENT = datetime(2026, 1, 5, 12, tzinfo=UTC)
LAST_SAMPLE = datetime(2026, 1, 5, 12, 10, tzinfo=UTC)  # the exporter dies with the service
END = datetime(2026, 1, 5, 14, tzinfo=UTC)

CONFIG = """
features:
  google:
    ladder: [0, 10, 50, 100]
    safe_percent: 10
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(app_errors_total[10m]))
          total: sum(increase(app_requests_total[10m]))
        max: 0.01
        min_samples: 200
"""


def history() -> str:
    first, last = int(START.timestamp()), int(LAST_SAMPLE.timestamp())
    times = list(range(first, last + 1, 60))
    incident = int(INCIDENT.timestamp())

    def requests_at(at: int) -> float:
        return 100.0 * (at - first) / 60

    def errors_at(at: int) -> float:
        healthy = 0.2 * (min(at, incident) - first) / 60
        return healthy + 10.0 * max(0, at - incident) / 60

    return openmetrics_counters(
        {"app_requests": {'job="app"': requests_at}, "app_errors": {'job="app"': errors_at}},
        times,
    )


def test_a_tick_where_prometheus_has_no_data_is_no_data_in_the_backtest(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    with prometheus_with(history()) as prometheus:
        answer = requests.get(
            f"{prometheus.url}/api/v1/query",
            params={"query": "sum(increase(app_errors_total[10m]))", "time": "1767615600"},
            timeout=10,
        ).json()  # 2026-01-05T12:20:00Z: Prometheus itself has nothing
        body = json_of(
            rollout(
                "backtest", "google", "--start", iso(START), "--end", iso(END), "--step", "10m",
                "--from-percent", "100", "--config", str(config), "--json",
                env={"PROMETHEUS_BASE_URL": prometheus.url},
            )
        )  # fmt: skip

    assert answer["data"]["result"] == []
    moves = [(c["time"], c["from_percent"], c["to_percent"]) for c in body["changes"]]
    assert moves == [("2026-01-05T12:10:00Z", 100.0, 10.0)], moves
    # 10:00 (one sample), then 12:20 .. 14:00: twelve ticks where Prometheus answered nothing
    assert body["summary"]["no_data_ticks"] == 12, body["summary"]
