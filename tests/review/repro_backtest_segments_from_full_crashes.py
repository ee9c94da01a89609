"""`rollout backtest` of a segmented feature `--from-percent 100` dies with a traceback.

backtest.combined_json adds the segments' summaries up; the feature's time to 100% is
`max(f for f in fulls if f)`. Starting at 100%, every segment's time_to_full is timedelta(0),
which is falsy, so the generator is empty and max() raises ValueError, which shell.run does
not catch: a Rich traceback, exit 1, no JSON. "What would it have done had we been fully
rolled out already?" is a natural question.

Observed: ValueError: max() arg is an empty sequence. Expected: exit 0 with time_to_full 0.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from tests.review._support import rollout

CONFIG = """
features:
  google:
    segments:
      by: region
      values: [eu, us]
    slos:
      - name: error_rate
        ratio:
          errors: sum by (region) (increase(e_total[5m]))
          total: sum by (region) (increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""


def test_a_segmented_backtest_from_full_rollout_reports_zero_time_to_full(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(CONFIG, encoding="utf-8")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        (
            (start + timedelta(minutes=10 * i)).isoformat(),
            f"google[{seg}]",
            "error_rate",
            0.002,
            900,
        )
        for i in range(12)
        for seg in ("eu", "us")
    ]
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        series, index=False
    )

    result = rollout(
        "backtest", "google", "--series", str(series), "--config", str(config),
        "--from-percent", "100", "--json",
    )  # fmt: skip

    assert result.exit_code == 0, repr(result.exception)
    assert json.loads(result.stdout)["summary"]["time_to_full"] == 0
