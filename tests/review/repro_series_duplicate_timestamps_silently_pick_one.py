"""A --series file with two different readings for the same feature, SLO and time is replayed
without a word: the last row wins.

replay._index sorts by (feature, slo, time) with a stable sort and bisects, so of two rows at
the same instant the later one in the file decides. A merged or twice-exported file (a healthy
copy and a breaching copy) thus turns a healthy history into a breach at every tick, or the
other way round, depending on row order, and the backtest reports it as fact.

Observed: exit 0; 0 promotions, every tick "breach at 0%". Expected: exit 2 naming the first
duplicated (feature, slo, time) and its two values (or at least a warning on stderr).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.review._support import rollout

CONFIG = """
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""


def test_conflicting_duplicate_readings_are_refused(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "merged.csv"
    config.write_text(CONFIG, encoding="utf-8")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    times = [(start + timedelta(minutes=10 * i)).isoformat() for i in range(12)]
    healthy = [(t, "google", "error_rate", 0.002, 1000) for t in times]
    breaching = [(t, "google", "error_rate", 0.2, 1000) for t in times]
    columns = ["time", "feature", "slo", "value", "samples"]
    pd.DataFrame(healthy + breaching, columns=columns).to_csv(series, index=False)

    result = rollout("backtest", "google", "--series", str(series), "--config", str(config))

    assert result.exit_code == 2, result.output
    assert "duplicate" in result.stderr.lower() and "error_rate" in result.stderr
