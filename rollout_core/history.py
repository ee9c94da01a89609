"""SLO history from Prometheus' `/api/v1/query_range`, as a `ReplaySource` frame.

Each distinct PromQL text of the features is read once per chunk of the range, a chunk holding
at most `MAX_POINTS` steps (Prometheus refuses more than 11,000 points per series), so a month
at a 10-minute step costs one request per query. The readings are then picked tick by tick with
the live source's own `snapshot_for`, so grouping, ratios and NaN behave exactly as live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import requests

from rollout_core.backtest import ticks_between
from rollout_core.config import FeatureSpec
from rollout_core.errors import ConfigError, MetricsUnavailable
from rollout_core.replay import NO_SERIES, REPLAY_COLUMNS
from rollout_core.replay import row as replay_row
from rollout_core.slo import HttpQueryClient, QueryResults, Series, distinct_queries, snapshot_for
from rollout_core.urls import redact_url, split_credentials

__all__ = ["MAX_POINTS", "RangeReader", "chunks", "query_errors", "readings_frame"]

MAX_POINTS = 10_000  # per request and series; Prometheus' own limit is 11,000


def chunks(
    start: datetime, end: datetime, step: timedelta, max_points: int = MAX_POINTS
) -> list[tuple[datetime, datetime]]:
    """The range cut into pieces of at most `max_points` steps each, ends inclusive."""
    ticks = ticks_between(start, end, step)
    return [
        (ticks[i], ticks[min(i + max_points, len(ticks)) - 1])
        for i in range(0, len(ticks), max_points)
    ]


class RangeReader:
    """Reads every SLO query of the features over a range; `requests_sent` counts requests."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        client: Any | None = None,
        max_points: int = MAX_POINTS,
    ) -> None:
        if not base_url:
            raise ConfigError(
                "PROMETHEUS_BASE_URL is not set; export it (e.g. http://127.0.0.1:9090), "
                "or replay a recorded series with --series FILE"
            )
        plain, auth = split_credentials(base_url.rstrip("/"))
        self.url = redact_url(base_url.rstrip("/"))
        self.requests_sent = 0
        self.max_points = max_points
        self.timeout = timeout
        self._client = client or HttpQueryClient(plain, timeout, None, auth)

    def read(
        self, specs: Sequence[FeatureSpec], start: datetime, end: datetime, step: timedelta
    ) -> pd.DataFrame:
        """Every feature's readings at each tick, in the ReplaySource format."""
        series: dict[str, dict[int, list[Series]]] = {}
        for query in distinct_queries(specs):
            by_time: dict[int, list[Series]] = {}
            for first, last in chunks(start, end, step, self.max_points):
                for labels, points in self._range(query, first, last, step):
                    for stamp, value in points:
                        by_time.setdefault(round(float(stamp) * 1000), []).append(
                            Series(labels, float(value))
                        )
            series[query] = by_time
        return readings_frame(specs, series, ticks_between(start, end, step))

    def _range(
        self, query: str, first: datetime, last: datetime, step: timedelta
    ) -> list[tuple[dict[str, str], list[list[Any]]]]:
        params = {
            "start": f"{first.timestamp():.3f}",
            "end": f"{last.timestamp():.3f}",
            "step": f"{step.total_seconds():g}",
        }
        self.requests_sent += 1
        try:
            answer = self._client.query_range(query, params)
        except requests.Timeout:
            raise MetricsUnavailable(
                f"Prometheus at {self.url} gave no complete answer to a range read within "
                f"{self.timeout:g}s; check that it runs and PROMETHEUS_BASE_URL points at it, "
                "or read a shorter range"
            ) from None
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"Prometheus at {self.url} did not answer a range read ({type(exc).__name__}); "
                "check that it runs and PROMETHEUS_BASE_URL points at it"
            ) from None
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("status") == "success":
            data = body.get("data", {})
            if data.get("resultType") != "matrix":
                raise ConfigError(
                    f"query {query!r} gave a {data.get('resultType')} over a range, not series; "
                    "wrap a range selector in a function such as increase()"
                )
            return [
                (dict(item.get("metric", {})), item.get("values", [])) for item in data["result"]
            ]
        if body.get("status") == "error" and "errorType" in body:
            detail = f"{body['errorType']}: {body.get('error', '')}"
            if answer.status == 400:
                raise ConfigError(
                    f"Prometheus at {self.url} refused query {query!r} over "
                    f"{first.isoformat()}..{last.isoformat()} ({detail}); fix the query, or "
                    "use a coarser --step or a shorter range"
                )
            if answer.status == 422:  # the request's size (range x step x series), every time
                raise ConfigError(
                    f"Prometheus at {self.url} could not run query {query!r} over "
                    f"{first.isoformat()}..{last.isoformat()} at step {params['step']}s "
                    f"({detail}); narrow the range or raise --step (or Prometheus' "
                    "--query.max-samples)"
                )
            raise MetricsUnavailable(
                f"Prometheus at {self.url} answered HTTP {answer.status} to query {query!r} "
                f"({detail}); retry later"
            )
        raise MetricsUnavailable(
            f"Prometheus at {self.url} answered HTTP {answer.status} without a Prometheus "
            "answer; check PROMETHEUS_BASE_URL"
        )


def readings_frame(
    specs: Sequence[FeatureSpec],
    series: Mapping[str, Mapping[int, list[Series]]],
    times: Sequence[datetime],
) -> pd.DataFrame:
    """Per tick, each feature's readings picked from the queries' series at that tick (the
    live source's `snapshot_for`), one row per feature, SLO and tick, in the ReplaySource
    format: a reading with no series is a `no series` row and a query the live source could
    not read (several series, a missing label) keeps its error, so the replay reads each tick
    exactly as live, never the tick before and never an error as absent."""
    rows: list[tuple[Any, ...]] = []
    for at in times:
        millis = round(at.timestamp() * 1000)
        results = QueryResults({q: tuple(by_time.get(millis, ())) for q, by_time in series.items()})
        moment = at.astimezone(UTC)
        for spec in specs:
            for reading in snapshot_for(spec, results, at).readings.values():
                rows.append(replay_row(moment, spec.name, reading))
    return pd.DataFrame(rows, columns=list(REPLAY_COLUMNS))


def query_errors(frame: pd.DataFrame) -> str | None:
    """The first query error in a frame of readings, with how many readings had one, in words;
    None when there is none. The live controller names such a query as a configuration error
    and holds, so a backtest refuses it rather than replay a broken query."""
    if "error" not in frame.columns:
        return None
    errors = frame["error"].fillna("").astype(str)
    failed = frame[(errors != "") & (errors != NO_SERIES)]
    if failed.empty:
        return None
    first = failed.iloc[0]
    mine = (frame["feature"] == first["feature"]) & (frame["slo"] == first["slo"])
    count = int((mine & (errors != "") & (errors != NO_SERIES)).sum())
    return (
        f"SLO {first['slo']!r} of {first['feature']!r} could not be read at {count} of "
        f"{int(mine.sum())} ticks, first at {first['time']}: {first['error']}"
    )
