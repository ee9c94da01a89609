"""`backtest --series FILE` errors about the file's content name "<replay frame>", not FILE.

history_commands._history reads the file itself (replay.read_series) and hands ReplaySource a
DataFrame, so ReplaySource's messages say `<replay frame>: missing column(s) value` and
`<replay frame>: column 'time' row 4 is 'yesterday'`: the user is not told which file (with
--series and --export both in play, or a script looping over files, that matters).

Observed: "<replay frame>: ...". Expected: the message names the --series path.
"""

from __future__ import annotations

from pathlib import Path

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


def test_a_series_content_error_names_the_file(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history-2026-01.csv"
    config.write_text(CONFIG, encoding="utf-8")
    series.write_text(
        "time,feature,slo,val,samples\n2026-01-05T00:00:00Z,google,error_rate,0.002,900\n",
        encoding="utf-8",
    )

    result = rollout("backtest", "google", "--series", str(series), "--config", str(config))

    assert result.exit_code == 2, result.output
    assert "history-2026-01.csv" in result.stderr, result.stderr
