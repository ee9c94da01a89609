"""`rollout tune`'s "complete, ready-to-paste" config silently drops the feature's `abort_on`.

tune.config_text rebuilds the feature from its spec field by field (ladder, safe_percent,
dwell, cooldown, freeze, metric_key, promote_without_traffic, segments, slos) and leaves out
`abort_on`. An SRE who writes the suggestion to rollouts.yaml, as the issue and docs invite
(`tune --json` -> `config` -> `backtest --config`), loses the fast abort: a firing
GmailErrorRateFast is then ignored ("not in google's abort_on") until the next scheduled
run. Nothing in the output says so.

Observed: the suggested feature has abort_on == (). Expected: the suggestion keeps every
setting it does not tune, abort_on included.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from rollout_core.config import parse_config
from tests.review._support import rollout

CONFIG = """
features:
  google:
    abort_on: [GmailErrorRateFast]
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""


def healthy_series(path: Path, ticks: int = 800) -> None:
    rng = random.Random(14)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        (start + timedelta(minutes=10 * i), "google", "error_rate", rng.uniform(0.002, 0.006), 900)
        for i in range(ticks)
    ]
    frame = pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])
    frame.to_parquet(path, index=False)


def test_the_suggested_config_keeps_the_features_abort_on(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.parquet"
    config.write_text(CONFIG, encoding="utf-8")
    healthy_series(series)

    result = rollout("tune", "google", "--series", str(series), "--config", str(config), "--json")

    assert result.exit_code == 0, result.output
    suggested = parse_config(json.loads(result.stdout)["config"]).feature("google")
    assert suggested.abort_on == ("GmailErrorRateFast",)
