"""`rollout tune --series F --start A --end B` suggests from the whole file, not from A..B.

history_commands.tune passes the whole frame to tune.suggest (only the Prometheus path reads
just the range), while the side-by-side backtest replays A..B. So an SRE who picks the quiet
week of an exported month to tune on gets thresholds learnt from the whole month (incidents
included), and a one-day range is not refused for too little history as it is over
Prometheus: the suggestion says "windows": 800 for a range of 100 ticks.

Likewise it counts every row of the file as an evaluation window, whatever --step: 12 hours of
one-minute rows pass the "600 windows" sufficiency check at --step 10m (72 evaluations).

Observed: exit 0, windows == every row of the file. Expected: the suggestion uses only the
readings at the evaluation ticks in A..B; here 100 (and 72) ticks, so exit 2 "needs at least
600 ... widen the range".
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.review._support import iso, rollout

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
START = datetime(2026, 1, 5, tzinfo=UTC)


def test_tune_on_a_series_uses_only_the_readings_in_the_range(tmp_path: Path) -> None:
    config, path = tmp_path / "rollouts.yaml", tmp_path / "month.csv"
    config.write_text(CONFIG, encoding="utf-8")
    rng = random.Random(1)
    rows = [
        ((START + timedelta(minutes=10 * i)).isoformat(), "google", "error_rate",
         rng.uniform(0.002, 0.006), 900)
        for i in range(800)
    ]  # fmt: skip
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        path, index=False
    )
    end = START + timedelta(minutes=10 * 99)  # 100 ticks

    result = rollout(
        "tune", "google", "--series", str(path), "--start", iso(START), "--end", iso(end),
        "--config", str(config), "--json",
    )  # fmt: skip

    assert result.exit_code == 2, result.stdout[:400]
    assert "needs at least 600" in result.stderr


def test_tune_on_a_series_counts_evaluations_at_the_step_not_rows(tmp_path: Path) -> None:
    """12 hours of one-minute rows is 72 evaluations at --step 10m (what the side-by-side
    backtest replays), not 720: far from the 600 the sufficiency check asks for."""
    config, path = tmp_path / "rollouts.yaml", tmp_path / "minutes.csv"
    config.write_text(CONFIG, encoding="utf-8")
    rng = random.Random(1)
    rows = [
        ((START + timedelta(minutes=i)).isoformat(), "google", "error_rate",
         rng.uniform(0.002, 0.006), 900)
        for i in range(12 * 60)
    ]  # fmt: skip
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        path, index=False
    )

    result = rollout(
        "tune", "google", "--series", str(path), "--step", "10m", "--config", str(config),
        "--json",
    )  # fmt: skip

    assert result.exit_code == 2, result.stdout[:400]
    assert "needs at least 600" in result.stderr
