"""Two boundaries the backtest takes without a word, or with the wrong words.

1. A range in the future (`--start` and `--end` after now): Prometheus has nothing there, and
   the backtest exits 0 with every tick "inconclusive" and no-data, a report that reads like
   a feature that never had traffic. Expected: exit 2 saying the range is in the future
   (the CLI reads the clock anyway, for `now`).
2. `--from-percent 0.00001`: the CLI re-formats the float with `:g` before parsing it, so the
   error quotes a value the user never typed: "percent '1e-05' is not a plain decimal (no
   sign, exponent or '_')". Expected: the message quotes '0.00001' and says what is wrong
   with it (finer than the 0.01% granularity).
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


def test_a_range_in_the_future_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    first = int(START.timestamp())
    history = openmetrics_counters(
        {"app_requests": {'job="app"': lambda t: float(t - first)}},
        list(range(first, first + 3600, 60)),
    )
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    with prometheus_with(history) as prometheus:
        result = rollout(
            "backtest", "google", "--start", iso(future), "--end", iso(future + timedelta(days=1)),
            "--config", str(config), "--json", env={"PROMETHEUS_BASE_URL": prometheus.url},
        )  # fmt: skip

    assert result.exit_code == 2, result.stdout[-300:]
    assert "future" in result.stderr


def test_from_percent_errors_quote_what_the_user_typed(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    series = tmp_path / "s.csv"
    series.write_text(
        "time,feature,slo,value,samples\n2026-01-05T00:00:00Z,google,error_rate,0.002,900\n"
    )

    result = rollout(
        "backtest", "google", "--series", str(series), "--config", str(config),
        "--from-percent", "0.00001",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "1e-05" not in result.stderr and "0.00001" in result.stderr, result.stderr
