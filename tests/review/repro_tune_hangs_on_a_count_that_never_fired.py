"""`rollout tune` never returns when a count SLO read zero over the whole history.

tune._suggest_scalar for a count SLO: the healthy mean is 0, the suggested max is 0, and the
"detects" search starts at `rate = mean` and multiplies it by 1.05 until the Poisson tail
reaches 99%. 0 * 1.05 is 0: the loop spins forever at 100% CPU. A failure counter that never
fired over the range (or a counter that is never exported until it first increments, read as
0 by absent_is_zero, the default) is the normal state of a healthy feature, so tune hangs on
exactly the histories it is meant for. (The suggested max 0 would itself roll back on the
first failure ever seen.)

Observed: still running after 60 s (a few seconds' work otherwise). Expected: a suggestion
(or a refusal saying the count never fired), exit 0 or 2, within the test's limit.
"""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

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
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_failures_total[15m]))
        max: 5
"""


def test_tune_returns_when_a_count_slo_never_fired(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "quiet.csv"
    config.write_text(CONFIG, encoding="utf-8")
    rng, start, rows = random.Random(1), datetime(2026, 1, 5, tzinfo=UTC), []
    for i in range(700):
        at = (start + timedelta(minutes=10 * i)).isoformat()
        rows.append((at, "google", "error_rate", rng.uniform(0.002, 0.006), 900))
        rows.append((at, "google", "oauth_refresh_failures", 0.0, ""))
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        series, index=False
    )
    rollout = str(Path(sys.executable).with_name("rollout"))
    command = [
        rollout,
        "tune",
        "google",
        "--series",
        str(series),
        "--config",
        str(config),
        "--json",
    ]
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("rollout tune still running after 60 s") from None

    assert finished.returncode in (0, 2), finished.stderr
