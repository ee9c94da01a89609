"""A --series file that holds nothing for the feature, or nothing for one of its SLOs, is
replayed without a word, and a missing count SLO is read as zero failures.

ReplaySource answers "no series" for a (feature, SLO) the file never mentions, exactly as for
a tick with no row. Over Prometheus that mirrors live semantics (an absent count series is 0);
over a file it means the file does not record that SLO at all (exported with another config,
an SLO added since, a typo in the feature column). Then:
1. a file of another feature (or of the segments, `google[eu]`, for a feature without them):
   exit 0, every tick "inconclusive", no hint that the file holds other features;
2. a file without the count SLO: every tick reads `oauth_refresh_failures 0 (no series, read
   as 0)`: healthy, and the backtest promotes to 100% on failures it never saw.

Expected: exit 2 naming the feature (and the features the file does hold), or the SLO that
has no row at all in the range; at the very least a warning on stderr naming it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.review._support import rollout

CONFIG = """
features:
  google:
    dwell: 10m
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_failures_total[15m]))
        max: 5
"""


def write(tmp_path: Path, feature: str) -> tuple[Path, Path]:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(CONFIG, encoding="utf-8")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        ((start + timedelta(minutes=10 * i)).isoformat(), feature, "error_rate", 0.002, 1000)
        for i in range(24)
    ]
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        series, index=False
    )
    return config, series


def test_a_series_without_the_feature_is_refused(tmp_path: Path) -> None:
    config, series = write(tmp_path, "google[eu-west]")

    result = rollout("backtest", "google", "--series", str(series), "--config", str(config))

    assert result.exit_code == 2, result.output
    assert "google[eu-west]" in result.stderr


def test_a_series_without_a_count_slo_does_not_read_it_as_zero_failures(tmp_path: Path) -> None:
    config, series = write(tmp_path, "google")

    result = rollout("backtest", "google", "--series", str(series), "--config", str(config))

    assert "oauth_refresh_failures" in result.stderr, result.stdout[-600:]
