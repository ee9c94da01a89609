"""`rollout tune --series` does not validate the file the way `backtest --series` does.

backtest reads a series through ReplaySource, whose _index names the first bad cell
("column 'value' row 1 is 'x', not a number"). tune hands the raw frame to tune.suggest, which
coerces with errors="coerce" and counts what is left; its ReplaySource (for the side-by-side
backtest) is built only afterwards. So on the same malformed files:
1. a 'time' column that does not parse: _history's min() is NaT and `int((last - first) /
   tick)` raises ValueError: a traceback, exit 1;
2. a 'value' column of text: "only 0 evaluation windows with data ... widen the range by about
   4.2 days": advice to wait for more history, for a file that is simply broken.

3. a single `inf` request count (no count, in the ReplaySource format, and replayed as such by
   backtest): wilson_lower_bound raises ValueError: a traceback, exit 1.

Expected: exit 2 with the same message backtest gives, naming the column and row (1, 2); the
format's no-data values read as no data (3).
"""

from __future__ import annotations

import random
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


def series(tmp_path: Path, **broken: str) -> tuple[Path, Path]:
    config, path = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(CONFIG, encoding="utf-8")
    rng, start = random.Random(1), datetime(2026, 1, 5, tzinfo=UTC)
    rows = [
        ((start + timedelta(minutes=10 * i)).isoformat(), "google", "error_rate",
         rng.uniform(0.002, 0.006), 900)
        for i in range(700)
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])
    for column, text in broken.items():
        frame[column] = text
    frame.to_csv(path, index=False)
    return config, path


def tune(config: Path, path: Path) -> tuple[int, str, object]:
    result = rollout("tune", "google", "--series", str(path), "--config", str(config), "--json")
    return result.exit_code, result.stderr, result.exception


def test_tune_names_a_time_column_that_does_not_parse(tmp_path: Path) -> None:
    code, stderr, exception = tune(*series(tmp_path, time="garbage"))

    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert code == 2 and "'time'" in stderr, stderr


def test_tune_names_a_value_column_that_is_not_numbers(tmp_path: Path) -> None:
    code, stderr, _ = tune(*series(tmp_path, value="x"))

    assert code == 2, stderr
    assert "widen the range" not in stderr and "'value'" in stderr, stderr


def test_tune_reads_an_infinite_sample_count_as_no_count_like_the_backtest(
    tmp_path: Path,
) -> None:
    """The ReplaySource format reads ±Inf as no data and backtest replays such a file; tune's
    ratio path keeps `samples > 0` rows, inf included, and wilson_lower_bound raises
    ValueError("samples inf must be a positive finite count"): a traceback, exit 1."""
    config, path = series(tmp_path)
    frame = pd.read_csv(path)
    frame["samples"] = frame["samples"].astype(float)
    frame.loc[5, "samples"] = float("inf")
    frame.to_csv(path, index=False)

    code, stderr, exception = tune(config, path)

    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert code == 0, stderr
