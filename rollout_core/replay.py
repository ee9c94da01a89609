"""ReplaySource: SLO readings replayed from a recorded series, for backtests and the demo.

The series is in long format, one row per feature, SLO and time (CSV, Parquet or a frame):

    time     ISO-8601 (naive means UTC) or a datetime
    feature  the feature name, as in rollouts.yaml
    slo      the SLO name
    value    the reading: the error ratio, the latency or the count; empty/NaN/±Inf is no data
    samples  optional: the request count behind the value (empty, NaN or negative: no count)
    error    optional: why the reading has no value. `no series`: the query's result held no
             series for it (an empty Prometheus result); any other text: the query failed,
             as `kind: detail (query '...')`. Empty: a reading.

`fetch(specs, at)` takes, per feature and SLO, the latest row at or before `at` and no older
than `staleness`; otherwise, or on a `no series` row, the reading has no series, as an empty
Prometheus result would (the policy reads it as 0 for a count SLO with `absent_is_zero`). A
row's NaN or ±Inf stays as it is: no data, never 0; an error row is that query error, as live.
A series read from Prometheus (`rollout backtest --export`) has a row at every tick, so it
replays exactly, whatever the staleness. Inside an outage window fetch raises
MetricsUnavailable, to rehearse a metrics outage.
"""

from __future__ import annotations

import ast
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from rollout_core.config import FeatureSpec
from rollout_core.errors import ConfigError, MetricsUnavailable, RolloutError
from rollout_core.model import QueryError, SloReading, SloSnapshot

__all__ = ["NO_SERIES", "REPLAY_COLUMNS", "ReplaySource", "error_text", "read_series", "row"]

REPLAY_COLUMNS = ("time", "feature", "slo", "value", "samples", "error")
NO_SERIES = "no series"  # the `error` of a reading whose query answered no series for it
_REQUIRED = ("time", "feature", "slo", "value")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORMAT_HINT = "expected columns time, feature, slo, value[, samples][, error], one row per reading"


@dataclass(frozen=True)
class _Track:
    """One feature's SLO over time, sorted by time (microseconds since the epoch)."""

    times: list[int]
    values: list[float]
    samples: list[float]
    errors: list[QueryError | str | None]  # None: a reading; NO_SERIES; or the query's error


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
        name: str | None = None,
    ) -> None:
        """`name` says where a frame came from (its file) in every error about its content."""
        if isinstance(series, pd.DataFrame):
            frame, source = series, name or "<replay frame>"
        else:
            frame, source = read_series(series), name or str(series)
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
                    error = track.errors[position]
                    if error is None:
                        readings[name] = SloReading(name, value, count)
                    elif isinstance(error, QueryError):
                        readings[name] = SloReading(name, None, None, error)
                    else:  # NO_SERIES: the query answered, without a series for it
                        readings[name] = SloReading(name, None, count)
                    continue
            readings[name] = SloReading(name, None, None)  # no series: an empty result
        return SloSnapshot(feature, readings, moment)

    @property
    def span(self) -> tuple[datetime, datetime] | None:
        """The first and last time of any row; None for a series without rows."""
        if not self._tracks:
            return None
        first = min(track.times[0] for track in self._tracks.values())
        last = max(track.times[-1] for track in self._tracks.values())
        return _EPOCH + timedelta(microseconds=first), _EPOCH + timedelta(microseconds=last)

    def check_covers(self, specs: Sequence[FeatureSpec], start: datetime, end: datetime) -> None:
        """ConfigError when the series holds no row at all for a feature, or for one of its
        SLOs, from `start` (less the staleness) to `end`: a file that never recorded an SLO
        would otherwise replay it as no series (0 failures, for a count SLO), silently."""
        held = sorted({feature for feature, _ in self._tracks})
        wanted = [spec.name for spec in specs]
        if not set(wanted) & set(held):
            shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
            raise ConfigError(
                f"{self.source} holds no rows for {', '.join(wanted)}; it holds {shown or 'none'}"
                ": replay it with the config it was recorded with, or fix its feature column"
            )
        low, high = _micros(_utc(start)) - self._staleness_us, _micros(_utc(end))
        missing = []
        for spec in specs:
            for slo in spec.slos:
                track = self._tracks.get((spec.name, slo.name))
                if track is None or bisect_right(track.times, high) == bisect_right(
                    track.times, low - 1
                ):
                    zero = " (a count SLO would read as 0 failures)" if slo.kind == "count" else ""
                    missing.append(f"{spec.name}/{slo.name}{zero}")
        if missing:
            raise ConfigError(
                f"{self.source} holds no rows for SLO {', '.join(missing)} from "
                f"{_utc(start).isoformat()} to {_utc(end).isoformat()}; record every SLO of the "
                "feature (e.g. backtest --export with this config), or pass a --config without it"
            )

    def readings(self, specs: Sequence[FeatureSpec], times: Sequence[datetime]) -> pd.DataFrame:
        """What `fetch` reads at each of `times`, one row per feature, SLO and time in this
        format (a no-series reading a `no series` row): the evaluations a backtest replays."""
        rows = []
        for at in times:
            moment = _utc(at)
            now = _micros(moment)
            for spec in specs:
                for reading in self._snapshot(spec, now, moment).readings.values():
                    rows.append(row(moment, spec.name, reading))
        return pd.DataFrame(rows, columns=list(REPLAY_COLUMNS))


def row(at: datetime, feature: str, reading: SloReading) -> tuple[Any, ...]:
    """One reading as a row of the format."""
    value = math.nan if reading.value is None else reading.value
    samples = math.nan if reading.samples is None else reading.samples
    if reading.error is not None:
        return (at, feature, reading.name, math.nan, math.nan, error_text(reading.error))
    return (at, feature, reading.name, value, samples, NO_SERIES if reading.value is None else "")


def error_text(error: QueryError) -> str:
    """A query error as the `error` column holds it; `_error` reads it back."""
    return f"{error.kind}: {error.detail} (query {error.query!r})"


_ERROR = re.compile(r"(?P<kind>[a-z_]+): (?P<detail>.*) \(query (?P<query>'.*'|\".*\")\)", re.S)


def _error(slo: str, text: str) -> QueryError:
    match = _ERROR.fullmatch(text)
    if match is None:
        return QueryError(slo=slo, query="", kind="recorded", detail=text)
    query = ast.literal_eval(match["query"])
    return QueryError(slo=slo, query=str(query), kind=match["kind"], detail=match["detail"])


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
            "error": _texts(frame, "error"),
        }
    )
    table["row"] = range(1, len(table) + 1)
    table = table.sort_values(["feature", "slo", "time"], kind="stable")
    table = _without_duplicates(table, source)
    any_errors = bool((table["error"] != "").any())
    return {
        (str(feature), str(slo)): _Track(
            group["time"].tolist(),
            group["value"].tolist(),
            group["samples"].tolist(),
            [_error_of(str(slo), text) for text in group["error"].tolist()]
            if any_errors
            else [None] * len(group),
        )
        for (feature, slo), group in table.groupby(["feature", "slo"], sort=False)
    }


def _error_of(slo: str, text: str) -> QueryError | str | None:
    if not text:
        return None
    return NO_SERIES if text == NO_SERIES else _error(slo, text)


def _texts(frame: pd.DataFrame, column: str) -> pd.Series:
    """The optional text column, empty cells (and an absent column) as ""."""
    if column not in frame.columns:
        return pd.Series("", index=frame.index, dtype="object")
    return frame[column].map(lambda cell: "" if pd.isna(cell) else str(cell).strip())


def _without_duplicates(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """One row per feature, SLO and time: exact copies kept once, conflicting ones refused
    naming both rows (a merged or twice-exported file would otherwise replay the last one)."""
    keys = ["feature", "slo", "time"]
    repeated = table.duplicated(keys, keep=False)
    if not repeated.any():
        return table
    copies = table[repeated]
    for _, group in copies.groupby(keys, sort=False):
        first = group.iloc[0]
        for _, other in group.iloc[1:].iterrows():
            if not _same(first, other):
                at = (_EPOCH + timedelta(microseconds=int(first["time"]))).isoformat()
                raise ConfigError(
                    f"{source}: rows {first['row']} and {other['row']} are duplicate readings "
                    f"of {first['feature']}/{first['slo']} at {at} that differ (value "
                    f"{first['value']:g}, samples {first['samples']:g} against value "
                    f"{other['value']:g}, samples {other['samples']:g}); keep one of them"
                )
    return table.drop_duplicates(keys, keep="first")


def _same(one: pd.Series, other: pd.Series) -> bool:
    def equal(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    return (
        equal(one["value"], other["value"])
        and equal(one["samples"], other["samples"])
        and one["error"] == other["error"]
    )


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
