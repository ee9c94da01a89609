"""`rollout tune`'s suggestions and the config it prints, on small generated histories."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from rollout_cli.main import app
from rollout_core.config import FeatureSpec, parse_config
from rollout_core.tune import SloSuggestion, config_text, suggest

T0 = datetime(2026, 1, 5, tzinfo=UTC)
EVERYTHING = """
defaults:
  dwell: 20m
features:
  google:
    ladder: [0, 1, 5, 25, 100]
    safe_percent: 1
    cooldown: 2h
    abort_on: [GmailErrorRateFast, GmailLatencyFast]
    metric_key: gmail
    promote_without_traffic: true
    freeze:
      - {days: [fri], start: "17:00", end: "24:00", tz: Europe/Berlin}
      - {days: [sat, sun]}
    segments: {by: region, values: [eu, us], order: parallel, halt_on_breach: all,
               fallback_percent: 5}
    slos:
      - name: error_rate
        ratio: {errors: 'sum by (region) (e{a="{{segment}}"})', total: 'sum by (region) (t)'}
        max: 0.01
        min_samples: 200
        group_by: provider
      - {name: oauth, kind: count, query: o, max: 5, absent_is_zero: false}
      - {name: latency, query: l, samples: s, max: 0.5, min_samples: 10}
"""


def suggestion(name: str, kind: str, maximum: float, min_samples: int) -> SloSuggestion:
    return SloSuggestion(name, kind, maximum, min_samples, 0.001, "detects", 0, 0, "", 700, 0)


def test_the_suggested_config_changes_only_max_and_min_samples_and_keeps_every_other_field() -> (
    None
):
    spec = parse_config(EVERYTHING).feature("google")
    tuned = [suggestion("error_rate", "ratio", 0.02, 150), suggestion("oauth", "count", 7, 0)]

    loaded = parse_config(config_text(spec, tuned)).feature("google")

    for field in FeatureSpec.model_fields:
        if field != "slos":
            assert getattr(loaded, field) == getattr(spec, field), field
    assert loaded.abort_on == ("GmailErrorRateFast", "GmailLatencyFast")
    for before, after in zip(spec.slos, loaded.slos, strict=True):
        for field in type(before).model_fields:
            if field not in ("max", "min_samples"):
                assert getattr(after, field) == getattr(before, field), (before.name, field)
    assert [(s.max, s.min_samples) for s in loaded.slos] == [(0.02, 150), (7, 0), (0.5, 10)]


def write_quiet_error_history(path: Path) -> None:
    """700 ten-minute readings of google's error_rate, healthy (0.2-0.6%, 900 requests), as CSV."""
    rng = random.Random(14)
    rows = [
        ((T0 + timedelta(minutes=10 * i)).isoformat(), "google", "error_rate",
         rng.uniform(0.002, 0.006), 900)
        for i in range(700)
    ]  # fmt: skip
    pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"]).to_csv(
        path, index=False
    )


def test_tune_json_config_keeps_the_features_abort_on(tmp_path: Path) -> None:
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(
        """
features:
  google:
    abort_on: [GmailErrorRateFast]
    slos:
      - {name: error_rate, ratio: {errors: e, total: t}, max: 0.01, min_samples: 200}
""",
        encoding="utf-8",
    )
    write_quiet_error_history(series)

    result = CliRunner().invoke(
        app, ["tune", "google", "--series", str(series), "--config", str(config), "--json"]
    )

    assert result.exit_code == 0, result.output
    suggested = parse_config(json.loads(result.stdout)["config"]).feature("google")
    assert suggested.abort_on == ("GmailErrorRateFast",)


def test_a_count_slo_that_never_fired_gets_a_suggestion_with_an_honest_false_rollback_rate() -> (
    None
):
    spec = parse_config(
        """
features:
  google:
    slos:
      - {name: error_rate, ratio: {errors: e, total: t}, max: 0.01, min_samples: 200}
      - {name: oauth, kind: count, query: o, max: 5}
"""
    ).feature("google")
    rng, rows = random.Random(1), []
    for i in range(700):
        at = T0 + timedelta(minutes=10 * i)
        rows.append((at, "google", "error_rate", rng.uniform(0.002, 0.006), 900.0))
        rows.append((at, "google", "oauth", 0.0, float("nan")))
    frame = pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])

    oauth = {s.name: s for s in suggest(spec, frame, 0.005, 600, 700)}["oauth"]

    assert oauth.max == 0  # one failure in a window breaches: below 0.5% of healthy windows
    assert 0 < oauth.expected_false_rollback <= 0.005  # never seen is not never: 3/700
    assert oauth.detects == "detects 4.6 per window"
    assert "never fired in 700 windows" in oauth.healthy


TUNED = """
features:
  google:
    slos:
      - {name: error_rate, ratio: {errors: e, total: t}, max: 0.01, min_samples: 200}
"""


def quiet_file(tmp_path: Path, rows: int = 700, every: timedelta = timedelta(minutes=10)) -> Path:
    rng = random.Random(1)
    path = tmp_path / "history.csv"
    pd.DataFrame(
        [
            ((T0 + i * every).isoformat(), "google", "error_rate", rng.uniform(0.002, 0.006), 900)
            for i in range(rows)
        ],
        columns=["time", "feature", "slo", "value", "samples"],
    ).to_csv(path, index=False)
    return path


def tune(tmp_path: Path, series: Path, *extra: str) -> tuple[int, str, object]:
    config = tmp_path / "rollouts.yaml"
    config.write_text(TUNED, encoding="utf-8")
    result = CliRunner().invoke(
        app, ["tune", "google", "--series", str(series), "--config", str(config), *extra]
    )
    return result.exit_code, result.stderr, result.exception


def test_tune_names_the_file_row_and_column_of_a_time_that_does_not_parse(tmp_path: Path) -> None:
    path = quiet_file(tmp_path)
    pd.read_csv(path).assign(time="garbage").to_csv(path, index=False)

    code, stderr, exception = tune(tmp_path, path)

    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert code == 2 and "history.csv: column 'time' row 1 is 'garbage'" in stderr, stderr


def test_tune_names_a_value_column_of_text_rather_than_asking_for_more_history(
    tmp_path: Path,
) -> None:
    path = quiet_file(tmp_path)
    pd.read_csv(path).assign(value="x").to_csv(path, index=False)

    code, stderr, _ = tune(tmp_path, path)

    assert code == 2 and "history.csv: column 'value' row 1 is 'x'" in stderr, stderr
    assert "widen the range" not in stderr


def test_tune_reads_an_infinite_sample_count_as_no_count_like_the_backtest(tmp_path: Path) -> None:
    path = quiet_file(tmp_path)
    frame = pd.read_csv(path)
    frame["samples"] = frame["samples"].astype(float)
    frame.loc[5, "samples"] = float("inf")
    frame.to_csv(path, index=False)

    code, stderr, exception = tune(tmp_path, path, "--json")

    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert code == 0, stderr


def test_tune_on_a_series_learns_only_from_the_ticks_in_start_to_end(tmp_path: Path) -> None:
    path = quiet_file(tmp_path, rows=800)
    end = T0 + timedelta(minutes=10 * 99)  # 100 ticks of the file's 800

    code, stderr, _ = tune(tmp_path, path, "--start", T0.isoformat(), "--end", end.isoformat())

    assert code == 2
    assert "only 100 evaluation windows with data" in stderr and "needs at least 600" in stderr


def test_tune_on_a_series_counts_evaluations_at_the_step_not_rows(tmp_path: Path) -> None:
    """12 hours of one-minute rows are 72 evaluations at --step 10m, not 720."""
    path = quiet_file(tmp_path, rows=12 * 60, every=timedelta(minutes=1))

    code, stderr, _ = tune(tmp_path, path, "--step", "10m")

    assert code == 2
    assert "only 72 evaluation windows with data" in stderr and "needs at least 600" in stderr


def test_evaluations_closer_than_the_query_window_count_as_overlapping_not_independent(
    tmp_path: Path,
) -> None:
    """720 one-minute evaluations of a [10m] query are 72 independent windows, not 720."""
    path = quiet_file(tmp_path, rows=12 * 60, every=timedelta(minutes=1))
    config = tmp_path / "rollouts.yaml"
    config.write_text(
        TUNED.replace("errors: e, total: t", "errors: 'sum(increase(e[10m]))', total: "
                      "'sum(increase(t[10m]))'"),
        encoding="utf-8",
    )  # fmt: skip

    result = CliRunner().invoke(
        app, ["tune", "google", "--series", str(path), "--step", "1m", "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert (
        "only 72 non-overlapping windows with data (720 evaluations every 60s of a 600s query "
        "window)" in result.stderr
    )
    assert "needs at least 600: widen the range by about 3.7 days" in result.stderr


def test_the_printed_rollouts_snippet_is_whole_however_long_its_queries(tmp_path: Path) -> None:
    query = 'sum(increase(action_exec_total{provider="google",action="gmail.send"}[10m]))' * 3
    config, series = tmp_path / "rollouts.yaml", tmp_path / "history.csv"
    config.write_text(
        f"""
features:
  google:
    slos:
      - name: error_rate
        ratio: {{errors: 'e', total: '{query}'}}
        max: 0.01
        min_samples: 200
""",
        encoding="utf-8",
    )
    write_quiet_error_history(series)
    arguments = ["tune", "google", "--series", str(series), "--config", str(config)]

    printed = CliRunner().invoke(app, arguments)
    as_json = CliRunner().invoke(app, [*arguments, "--json"])

    assert printed.exit_code == 0 and as_json.exit_code == 0, printed.output
    text = json.loads(as_json.stdout)["config"]
    assert text in printed.stdout  # every line whole: pasted, it loads as tune suggested
    assert query in printed.stdout
