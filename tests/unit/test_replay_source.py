"""ReplaySource: the latest reading at or before `at`, staleness, outages and bad files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.errors import ConfigError, MetricsUnavailable
from rollout_core.model import SloReading, SloSnapshot, Verdict
from rollout_core.policy import evaluate_slo
from rollout_core.replay import ReplaySource

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
SLOS = (
    SloSpec(name="error_rate", ratio={"errors": "e", "total": "t"}, max=0.01),
    SloSpec(name="oauth", kind="count", query="o", max=5),
)
GOOGLE = FeatureSpec(name="google", slos=SLOS)


def frame(*rows: tuple[str, str, str, float | None, float | None]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])


SERIES = frame(
    ("2025-01-06T10:00:00Z", "google", "error_rate", 0.001, 900),
    ("2025-01-06T10:10:00Z", "google", "error_rate", 0.04, 950),
    ("2025-01-06T10:20:00Z", "google", "error_rate", None, 0),
    ("2025-01-06T10:00:00Z", "google", "oauth", 2, None),
)


def readings(source: ReplaySource, at: datetime) -> SloSnapshot:
    result = source.fetch([GOOGLE], at)["google"]
    assert isinstance(result, SloSnapshot)
    return result


def test_fetch_takes_the_latest_row_at_or_before_the_time() -> None:
    source = ReplaySource(SERIES, staleness=timedelta(minutes=15))
    assert readings(source, T0 + timedelta(minutes=9)).reading("error_rate") == SloReading(
        "error_rate", 0.001, 900.0
    )
    assert readings(source, T0 + timedelta(minutes=10)).reading("error_rate") == SloReading(
        "error_rate", 0.04, 950.0
    )


def test_a_row_older_than_the_staleness_limit_is_a_missing_reading() -> None:
    source = ReplaySource(SERIES, staleness=timedelta(minutes=5))
    late = readings(source, T0 + timedelta(minutes=6))
    assert late.reading("error_rate").is_missing


def test_a_time_before_the_first_row_is_a_missing_reading() -> None:
    before = readings(ReplaySource(SERIES), T0 - timedelta(seconds=1))
    assert before.reading("error_rate") == SloReading("error_rate", None, None)


def test_an_empty_value_is_missing_but_keeps_its_samples() -> None:
    reading = readings(ReplaySource(SERIES), T0 + timedelta(minutes=20)).reading("error_rate")
    assert reading.is_missing and reading.samples == 0.0


@pytest.mark.parametrize(("value", "said"), [(np.nan, "NaN"), (np.inf, "+Inf"), (-np.inf, "-Inf")])
def test_a_nan_or_infinite_count_row_is_no_data_never_read_as_zero(value: float, said: str) -> None:
    series = frame(("2025-01-06T10:00:00Z", "google", "oauth", value, None))
    reading = readings(ReplaySource(series), T0).reading("oauth")
    assert reading.is_missing
    verdict = evaluate_slo(SLOS[1], reading)
    assert verdict.verdict is Verdict.INCONCLUSIVE
    assert verdict.message == f"oauth no data ({said}): inconclusive"


def test_a_nan_or_negative_sample_count_is_no_count() -> None:
    for samples in (np.inf, -3.0):
        series = frame(("2025-01-06T10:00:00Z", "google", "error_rate", 0.001, samples))
        reading = readings(ReplaySource(series), T0).reading("error_rate")
        verdict = evaluate_slo(SLOS[0], reading)
        assert verdict.verdict is Verdict.INCONCLUSIVE
        assert "no request count" in verdict.message


def test_an_absent_count_reads_zero_like_an_empty_prometheus_result() -> None:
    source = ReplaySource(SERIES)
    assert readings(source, T0 + timedelta(minutes=1)).reading("oauth").value == 2
    absent = readings(source, T0 + timedelta(minutes=30)).reading("oauth")
    assert absent == SloReading("oauth", None, None)
    verdict = evaluate_slo(SLOS[1], absent)
    assert verdict.message == "oauth 0 (no series, read as 0) <= max 5: healthy"


def test_an_unknown_feature_gets_missing_readings_not_an_error() -> None:
    other = FeatureSpec(name="outlook", slos=SLOS)
    result = ReplaySource(SERIES).fetch([other], T0)["outlook"]
    assert isinstance(result, SloSnapshot)
    assert result.reading("error_rate").is_missing


def test_naive_times_are_read_as_utc() -> None:
    source = ReplaySource(SERIES)
    naive = readings(source, datetime(2025, 1, 6, 10, 10))
    assert naive.reading("error_rate").value == 0.04
    assert naive.taken_at == T0 + timedelta(minutes=10)


def test_a_fetch_inside_an_outage_window_raises_metrics_unavailable() -> None:
    source = ReplaySource(SERIES, outages=[(T0 + timedelta(minutes=5), T0 + timedelta(minutes=8))])
    with pytest.raises(MetricsUnavailable, match="outage"):
        source.fetch([GOOGLE], T0 + timedelta(minutes=5))
    assert isinstance(source.fetch([GOOGLE], T0 + timedelta(minutes=8))["google"], SloSnapshot)


def test_an_outage_added_later_takes_effect_at_once() -> None:
    source = ReplaySource(SERIES)
    source.add_outage(T0, T0 + timedelta(minutes=1))
    with pytest.raises(MetricsUnavailable):
        source.fetch([GOOGLE], T0)


def test_csv_and_parquet_files_replay_the_same_readings(tmp_path: Path) -> None:
    SERIES.to_csv(tmp_path / "series.csv", index=False)
    SERIES.to_parquet(tmp_path / "series.parquet")
    at = T0 + timedelta(minutes=10)
    from_csv = readings(ReplaySource(tmp_path / "series.csv"), at)
    from_parquet = readings(ReplaySource(str(tmp_path / "series.parquet")), at)
    assert from_csv.readings == from_parquet.readings == readings(ReplaySource(SERIES), at).readings


def test_the_samples_column_is_optional() -> None:
    source = ReplaySource(SERIES.drop(columns=["samples"]))
    assert readings(source, T0).reading("error_rate") == SloReading("error_rate", 0.001, None)


def test_a_file_without_a_required_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    SERIES.drop(columns=["slo"]).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"series\.csv: missing column\(s\) slo; expected"):
        ReplaySource(path)


def test_an_unparsable_time_names_the_file_row_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    bad = SERIES.copy()
    bad.loc[1, "time"] = "yesterday"
    bad.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"column 'time' row 2 is 'yesterday'.*ISO-8601"):
        ReplaySource(path)


def test_numeric_times_are_refused_rather_than_read_as_1970() -> None:
    with pytest.raises(ConfigError, match="column 'time' holds numbers"):
        ReplaySource(SERIES.assign(time=1736157600))


def test_a_value_that_is_not_a_number_names_the_column_and_row() -> None:
    with pytest.raises(ConfigError, match=r"column 'value' row 1 is 'high'"):
        ReplaySource(SERIES.assign(value=["high", 1, 2, 3]))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read replay series"):
        ReplaySource(tmp_path / "absent.csv")


def test_thousands_of_ticks_over_many_features_replay_every_row() -> None:
    features = [FeatureSpec(name=f"f{n:02d}", slos=SLOS) for n in range(20)]
    minutes = 300
    series = pd.DataFrame(
        {
            "time": np.tile(pd.date_range(T0, periods=minutes, freq="1min"), len(features)),
            "feature": np.repeat([f.name for f in features], minutes),
            "slo": "error_rate",
            "value": np.tile(np.arange(minutes) / 1e6, len(features)),
        }
    )
    source = ReplaySource(series)
    ticks = [source.fetch(features, T0 + timedelta(minutes=m, seconds=30)) for m in range(minutes)]
    final = ticks[-1]["f19"]
    assert isinstance(final, SloSnapshot)
    assert final.reading("error_rate").value == pytest.approx(299 / 1e6)


def test_no_series_and_query_error_rows_replay_as_the_live_source_read_them() -> None:
    from rollout_core.model import QueryError
    from rollout_core.replay import error_text

    error = QueryError("oauth", "increase(o[5m])", "several_series", "2 series; wrap it in sum")
    series = pd.DataFrame(
        [
            ("2025-01-06T10:00:00Z", "google", "oauth", None, None, "no series"),
            ("2025-01-06T10:10:00Z", "google", "oauth", None, None, error_text(error)),
        ],
        columns=["time", "feature", "slo", "value", "samples", "error"],
    )
    source = ReplaySource(series, staleness=timedelta(0))

    assert readings(source, T0).reading("oauth") == SloReading("oauth", None, None)
    failed = readings(source, T0 + timedelta(minutes=10)).reading("oauth")
    assert failed == SloReading("oauth", None, None, error)
    assert evaluate_slo(SLOS[1], failed).verdict is Verdict.INCONCLUSIVE


def test_conflicting_duplicate_readings_are_refused_naming_both_rows() -> None:
    twice = pd.concat([SERIES, SERIES.assign(value=[0.2, 0.04, None, 2])], ignore_index=True)

    with pytest.raises(
        ConfigError,
        match=r"history\.csv: rows 1 and 5 are duplicate readings of google/error_rate at "
        r"2025-01-06T10:00:00\+00:00 that differ \(value 0\.001, samples 900 against value 0\.2",
    ):
        ReplaySource(twice, name="history.csv")


def test_exact_duplicate_rows_are_read_once() -> None:
    source = ReplaySource(pd.concat([SERIES, SERIES], ignore_index=True))
    assert readings(source, T0).reading("error_rate") == SloReading("error_rate", 0.001, 900.0)


def test_content_errors_of_a_frame_name_where_it_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^history-2026-01\.csv: missing column\(s\) value"):
        ReplaySource(SERIES.drop(columns=["value"]), name="history-2026-01.csv")


def test_a_series_without_the_feature_is_refused_naming_what_it_holds() -> None:
    source = ReplaySource(SERIES.assign(feature="google[eu-west]"), name="h.csv")

    with pytest.raises(ConfigError, match=r"h\.csv holds no rows for google; it holds google\["):
        source.check_covers([GOOGLE], T0, T0 + timedelta(minutes=20))


def test_a_series_without_a_count_slo_in_the_range_is_refused_not_read_as_zero() -> None:
    source = ReplaySource(SERIES[SERIES["slo"] == "error_rate"], name="h.csv")

    with pytest.raises(
        ConfigError,
        match=r"no rows for SLO google/oauth \(a count SLO would read as 0 failures\) from",
    ):
        source.check_covers([GOOGLE], T0, T0 + timedelta(minutes=20))
    ReplaySource(SERIES).check_covers([GOOGLE], T0, T0 + timedelta(minutes=20))  # both there
