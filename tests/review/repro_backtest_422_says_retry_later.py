"""A range read Prometheus refuses with 422 "too many samples" tells the user to retry later.

history.RangeReader maps every non-400 Prometheus error to MetricsUnavailable "...; retry
later" (exit 1, an infrastructure failure). For a range read, 422 `execution: query processing
would load too many samples` is a property of the request (range x step x series), not a
passing outage: retrying the same backtest fails the same way, forever. The reader neither
splits the chunk further nor says what would work.

Observed: exit 1, "answered HTTP 422 ... retry later". Expected: either the reader retries in
smaller chunks and the backtest succeeds, or exit 2 naming the fix (a shorter range, a
coarser --step, or Prometheus' --query.max-samples).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.review._support import iso, openmetrics_counters, prometheus_with, rollout

CONFIG = """
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(app_errors_total[10m]))
          total: sum(increase(app_requests_total[10m]))
        max: 0.01
        min_samples: 200
"""
START = datetime(2026, 1, 5, tzinfo=UTC)
END = START + timedelta(days=2)


def test_too_many_samples_is_not_reported_as_a_passing_outage(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    first = int(START.timestamp())
    times = list(range(first, int(END.timestamp()) + 1, 60))
    history = openmetrics_counters(
        {
            "app_requests": {'job="app"': lambda t: 100.0 * (t - first) / 60},
            "app_errors": {'job="app"': lambda t: 0.2 * (t - first) / 60},
        },
        times,
    )
    with prometheus_with(history, "--query.max-samples=500") as prometheus:
        result = rollout(
            "backtest", "google", "--start", iso(START), "--end", iso(END), "--step", "10m",
            "--config", str(config), "--json", env={"PROMETHEUS_BASE_URL": prometheus.url},
        )  # fmt: skip

    assert "too many samples" not in result.stderr or "retry later" not in result.stderr, (
        result.stderr
    )
    if result.exit_code != 0:
        assert result.exit_code == 2, result.stderr
        assert "--step" in result.stderr or "range" in result.stderr
