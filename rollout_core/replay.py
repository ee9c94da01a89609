"""ReplaySource: SLO readings replayed from a recorded series, for backtests and the demo.

The series is in long format, one row per feature, SLO and time (CSV, Parquet or a frame):

    time     ISO-8601 (naive means UTC) or a datetime
    feature  the feature name, as in rollouts.yaml
    slo      the SLO name
    value    the reading: the error ratio, the latency or the count; empty/NaN/±Inf is no data
    samples  optional: the request count behind the value (empty, NaN or negative: no count)

`fetch(specs, at)` takes, per feature and SLO, the latest row at or before `at` and no older
than `staleness`; otherwise the reading has no series, as an empty Prometheus result would
(the policy reads it as 0 for a count SLO with `absent_is_zero`). A row's NaN or ±Inf stays
as it is: no data, never 0. Inside an outage window fetch raises MetricsUnavailable, to
rehearse a metrics outage.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from rollout_core.config import FeatureSpec
from rollout_core.errors import ConfigError, MetricsUnavailable, RolloutError
from rollout_core.model import SloReading, SloSnapshot

__all__ = ["REPLAY_COLUMNS", "ReplaySource", "read_series"]

REPLAY_COLUMNS = ("time", "feature", "slo", "value", "samples")
_REQUIRED = ("time", "feature", "slo", "value")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMAT_HINT = "expected columns time, feature, slo, value[, samples], one row per reading"


@dataclass(frozen=True)
class _Track:
    """One feature's SLO over time, sorted by time (microseconds since the epoch)."""

    times: list[int]
    values: list[float]
    samples: list[float]


def read_series(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet file as a frame; ConfigError when it cannot be read."""
    file = Path(path)
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(file)
        return pd.read_csv(file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read replay series {str(file)!r}: {exc}; "
            f"expected a CSV or Parquet file ({_FORMAT_HINT})"
        ) from None


class ReplaySource:
    """The MetricsSource over a recorded series, indexed once so each fetch is a few bisects."""

    def __init__(
        self,
        series: pd.DataFrame | str | Path,
        *,
        staleness: timedelta = timedelta(minutes=5),
        outages: Iterable[tuple[datetime, datetime]] = (),
    ) -> None:
        if isinstance(series, pd.DataFrame):
            frame, source = series, "<replay frame>"
        else:
            frame, source = read_series(series), str(series)
        self.source = source
        self.staleness = staleness
        self.outages: list[tuple[datetime, datetime]] = []
        for start, end in outages:
            self.add_outage(start, end)
        self._tracks = _index(frame, source)
        self._staleness_us = staleness // timedelta(microseconds=1)

    def add_outage(self, start: datetime, end: datetime) -> None:
        """From `start` (inclusive) to `end` (exclusive) every fetch raises MetricsUnavailable."""
        self.outages.append((_utc(start), _utc(end)))

    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        moment = _utc(at)
        for start, end in self.outages:
            if start <= moment < end:
                raise MetricsUnavailable(
                    f"replayed metrics outage from {start.isoformat()} to {end.isoformat()} "
                    f"({self.source}); the controller must hold and retry"
                )
        now = _micros(moment)
        return {spec.name: self._snapshot(spec, now, moment) for spec in specs}

    def _snapshot(self, spec: FeatureSpec, now: int, moment: datetime) -> SloSnapshot:
        feature, oldest, tracks = spec.name, now - self._staleness_us, self._tracks
        readings = {}
        for slo in spec.slos:  # inline: a fleet's backtest reads millions of these
            name = slo.name
            track = tracks.get((feature, name))
            if track is not None:
                position = bisect_right(track.times, now) - 1
                if position >= 0 and track.times[position] >= oldest:
                    # NaN and ±Inf stay: the policy reads them as no data, like Prometheus' NaN
                    value, samples = track.values[position], track.samples[position]
                    count = None if math.isnan(samples) else samples
                    readings[name] = SloReading(name, value, count)
                    continue
            readings[name] = SloReading(name, None, None)  # no series: an empty result
        return SloSnapshot(feature, readings, moment)


def _index(frame: pd.DataFrame, source: str) -> dict[tuple[str, str], _Track]:
    missing = [column for column in _REQUIRED if column not in frame.columns]
    if missing:
        raise ConfigError(f"{source}: missing column(s) {', '.join(missing)}; {_FORMAT_HINT}")
    table = pd.DataFrame(
        {
            "feature": frame["feature"].astype(str),
            "slo": frame["slo"].astype(str),
            "time": _times(frame["time"], source),
            "value": _numbers(frame, "value", source),
            "samples": _numbers(frame, "samples", source),
        }
    ).sort_values(["feature", "slo", "time"], kind="stable")
    return {
        (str(feature), str(slo)): _Track(
            group["time"].tolist(), group["value"].tolist(), group["samples"].tolist()
        )
        for (feature, slo), group in table.groupby(["feature", "slo"], sort=False)
    }


def _times(column: pd.Series, source: str) -> pd.Series:
    """Microseconds since the epoch; ConfigError naming the first time that does not parse."""
    if pd.api.types.is_numeric_dtype(column):
        raise ConfigError(
            f"{source}: column 'time' holds numbers; write ISO-8601 times such as "
            "2025-01-06T10:00:00Z (naive times are read as UTC)"
        )
    parsed = pd.to_datetime(column, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ConfigError(
            f"{source}: column 'time' row {row + 1} is {column.iloc[row]!r}, not a time; "
            "write ISO-8601 times such as 2025-01-06T10:00:00Z (naive times are read as UTC)"
        )
    return parsed.dt.as_unit("us").astype("int64")


def _numbers(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as floats (empty cells NaN); an absent optional column is all NaN."""
    if column not in frame.columns:
        return pd.Series(math.nan, index=frame.index, dtype="float64")
    parsed = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    bad = parsed.isna() & frame[column].notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ConfigError(
            f"{source}: column {column!r} row {row + 1} is {frame[column].iloc[row]!r}, "
            "not a number; write a number or leave the cell empty for a missing reading"
        )
    return parsed


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)
