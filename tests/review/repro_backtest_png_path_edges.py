"""`backtest --png` on a directory or an unwritable path.

history_commands._png hands the path to rollout_demo.timeline.draw_timeline, which calls
`path.parent.mkdir(...)` and matplotlib's `savefig`. Given a directory, matplotlib appends
".png" and writes a sibling file (`--png out/` writes `out.png` next to it) while the CLI
reports "timeline written to out"; given a path it cannot create, the OSError is not a
RolloutError, so `shell.run` lets it out as a traceback with exit 1 (an "infrastructure"
failure), after `--export` has already written its file.

Observed: exit 0 and a file outside the named path; a traceback with exit 1.
Expected: exit 2 with one line naming the path and the fix, nothing written elsewhere.
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
      - name: latency_p95
        query: histogram_quantile(0.95, sum by (le) (rate(b[5m])))
        max: 0.5
"""


def inputs(tmp_path: Path) -> tuple[Path, Path]:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(CONFIG, encoding="utf-8")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rows = []
    for i in range(12):
        at = (start + timedelta(minutes=10 * i)).isoformat()
        rows += [(at, "google", "error_rate", 0.002, 1000), (at, "google", "latency_p95", 0.2, "")]
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        series, index=False
    )
    return config, series


def test_png_naming_a_directory_is_refused_and_writes_nothing_beside_it(tmp_path: Path) -> None:
    config, series = inputs(tmp_path)
    target = tmp_path / "timelines"
    target.mkdir()

    result = rollout(
        "backtest", "google", "--series", str(series), "--config", str(config),
        "--png", str(target),
    )  # fmt: skip

    assert not (tmp_path / "timelines.png").exists(), "wrote a sibling of the named directory"
    assert result.exit_code == 2, result.output


def test_png_on_an_unwritable_path_is_one_clear_error_with_exit_2(tmp_path: Path) -> None:
    config, series = inputs(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")

    result = rollout(
        "backtest", "google", "--series", str(series), "--config", str(config),
        "--png", str(blocker / "timeline.png"),
    )  # fmt: skip

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert str(blocker / "timeline.png") in result.stderr
