"""SLO readings from Prometheus, with one query per distinct PromQL text per fetch.

Features that share an SLO profile with `group_by: <label>` share its queries: each query
returns one series per label value and each feature takes the series whose label equals its
`series_key`. Without `group_by` a query must return at most one series. An empty result or
NaN is a missing reading (inconclusive), never 0, except for count SLOs with `absent_is_zero`.
`ReplaySource` (a replayed frame, for backtests and the demo) lives in `rollout_core.replay`.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.errors import ConfigError, InvalidQuery, MetricsUnavailable, RolloutError
from rollout_core.model import SloReading, SloSnapshot
from rollout_core.urls import redact_url, split_credentials

if TYPE_CHECKING:
    from rollout_core.replay import ReplaySource

__all__ = [
    "PrometheusSource",
    "QueryClient",
    "QueryResults",
    "Rejected",
    "ReplaySource",
    "Series",
    "distinct_queries",
    "parse_result",
    "snapshot_for",
]

_API_ERROR = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.DOTALL)
_QUERY_STATUSES = (400, 422)  # bad_data (parse error) and execution error: the query is wrong


@dataclass(frozen=True)
class Series:
    """One series of an instant-query result: its labels and its value (NaN kept as NaN)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Rejected:
    """A query that cannot give readings: Prometheus refused it (HTTP 400/422, `status`) or
    its result has the wrong shape (`status` None). `detail` says why."""

    detail: str
    status: int | None = None


QueryOutcome = tuple[Series, ...] | Rejected


class QueryClient(Protocol):
    """The one method of prometheus-api-client's `PrometheusConnect` this source uses."""

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any: ...


def distinct_queries(specs: Sequence[FeatureSpec]) -> list[str]:
    """Every PromQL text the specs need, each once, in first-seen order."""
    return list(dict.fromkeys(q for spec in specs for slo in spec.slos for q in slo.queries))


def parse_result(raw: Any) -> tuple[Series, ...]:
    """An instant vector or scalar from the API's `data.result`; ValueError for anything else."""
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
        return (Series({}, float(raw[1])),)  # a scalar: [time, "value"]
    try:
        return tuple(Series(dict(item.get("metric", {})), float(item["value"][1])) for item in raw)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise ValueError(
            "a range vector or a string, not an instant vector; wrap a range selector in a "
            "function such as increase()"
        ) from None


class QueryResults:
    """One fetch's query outcomes; grouped results are indexed by label value on first use,
    so picking each of N features' series costs O(1), not O(N)."""

    def __init__(self, outcomes: Mapping[str, QueryOutcome]) -> None:
        self.outcomes = outcomes
        self._by_label: dict[tuple[str, str], dict[str, list[Series]]] = {}

    def grouped(
        self, query: str, series: tuple[Series, ...], label: str
    ) -> dict[str, list[Series]]:
        index = self._by_label.get((query, label))
        if index is None:
            index = {}
            for item in series:
                if label in item.labels:
                    index.setdefault(item.labels[label], []).append(item)
            self._by_label[(query, label)] = index
        return index


def snapshot_for(
    spec: FeatureSpec, results: QueryResults, at: datetime
) -> SloSnapshot | ConfigError:
    """One feature's readings picked out of the shared query outcomes, or its config error."""
    try:
        readings = {slo.name: _reading(spec, slo, results) for slo in spec.slos}
    except ConfigError as error:
        return error
    return SloSnapshot(spec.name, readings, at)


def _reading(spec: FeatureSpec, slo: SloSpec, results: QueryResults) -> SloReading:
    if slo.ratio is not None:
        total = _known(_pick(spec, slo, slo.ratio.total, results))
        errors = _known(_pick(spec, slo, slo.ratio.errors, results))
        if total is None or total <= 0 or errors is None:
            return SloReading(slo.name, None, total)
        return SloReading(slo.name, errors / total, total)
    assert slo.query is not None
    value = _pick(spec, slo, slo.query, results)
    if value is None and slo.kind == "count" and slo.absent_is_zero:
        value = 0.0  # no series: no events counted (NaN stays missing)
    samples = _known(_pick(spec, slo, slo.samples, results)) if slo.samples else None
    return SloReading(slo.name, _known(value), samples)


def _known(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _pick(spec: FeatureSpec, slo: SloSpec, query: str, results: QueryResults) -> float | None:
    """This feature's value in the query's result: None when absent, NaN kept as NaN."""
    outcome = results.outcomes[query]
    where = f"feature {spec.name!r} SLO {slo.name!r}: the query {query!r}"
    if isinstance(outcome, Rejected) and outcome.status is None:
        raise ConfigError(f"{where} returned {outcome.detail}")
    if isinstance(outcome, Rejected):
        raise InvalidQuery(spec.name, slo.name, query, outcome.detail)
    label = slo.group_by
    if label is None:
        if len(outcome) > 1:
            raise ConfigError(
                f"{where} returned {len(outcome)} series; wrap it in sum(...) or set "
                "group_by to the label that names the feature"
            )
        mine = list(outcome)
    else:
        index = results.grouped(query, outcome, label)
        if outcome and not index:
            raise ConfigError(
                f"{where} returned series without the label {label!r}; aggregate it with "
                f"sum by ({label}) (...) or remove group_by"
            )
        mine = index.get(spec.series_key, [])
        if len(mine) > 1:
            raise ConfigError(
                f"{where} returned {len(mine)} series with {label}={spec.series_key!r}; "
                f"aggregate it with sum by ({label}) (...)"
            )
    return mine[0].value if mine else None


class PrometheusSource:
    """The MetricsSource over Prometheus' HTTP API, evaluated at the `at` of each fetch.

    No library retries (retrying is the caller's job) and an explicit timeout, so an outage
    raises MetricsUnavailable in about one timeout. `queries_sent` counts every query sent.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        client: QueryClient | None = None,
    ) -> None:
        url = base_url or os.environ.get("PROMETHEUS_BASE_URL", "")
        if not url:
            raise ConfigError(
                "PROMETHEUS_BASE_URL is not set; export it (e.g. http://127.0.0.1:9090) "
                "or pass base_url"
            )
        plain, url_auth = split_credentials(url.rstrip("/"))
        self.url = redact_url(url.rstrip("/"))
        self.timeout = timeout
        self.queries_sent = 0
        self._client = client or _connect(plain, timeout, headers, auth or url_auth)

    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        """Every feature's readings at `at` (naive means UTC); MetricsUnavailable if Prometheus
        cannot answer; a rejected query is the error of each feature that uses it."""
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        params = {"time": f"{moment.timestamp():.3f}"}
        results = QueryResults(
            {query: self._run(query, params) for query in distinct_queries(specs)}
        )
        return {spec.name: snapshot_for(spec, results, moment) for spec in specs}

    def _run(self, query: str, params: dict[str, Any]) -> QueryOutcome:
        from prometheus_api_client.exceptions import PrometheusApiClientException

        self.queries_sent += 1
        try:
            raw = self._client.custom_query(query, params=params)
        except PrometheusApiClientException as exc:
            status, detail = _api_error(str(exc))
            if status in _QUERY_STATUSES:
                return Rejected(detail, status)
            hint = "check the credentials" if status in (401, 403) else "retry later"
            raise MetricsUnavailable(
                f"Prometheus at {self.url} answered HTTP {status}: {detail}; {hint}"
            ) from None
        except requests.RequestException as exc:
            raise MetricsUnavailable(
                f"Prometheus at {self.url} is unreachable: {self._reason(exc)}; "
                "check that it runs and PROMETHEUS_BASE_URL points at it"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise MetricsUnavailable(
                f"{self.url} did not answer like a Prometheus API; check PROMETHEUS_BASE_URL"
            ) from None
        try:
            return parse_result(raw)
        except ValueError as exc:
            return Rejected(str(exc))

    def _reason(self, exc: requests.RequestException) -> str:
        text = str(exc).lower()
        if isinstance(exc, requests.Timeout) or "timed out" in text:
            return f"no answer within {self.timeout:g}s"
        if "refused" in text:
            return "connection refused"
        return type(exc).__name__


def _connect(
    url: str,
    timeout: float,
    headers: Mapping[str, str] | None,
    auth: tuple[str, str] | None,
) -> QueryClient:
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    client: QueryClient = PrometheusConnect(
        url, headers=dict(headers or {}), retry=Retry(total=0), auth=auth, timeout=timeout
    )
    return client


def _api_error(message: str) -> tuple[int, str]:
    """(status, Prometheus' own error text) out of a PrometheusApiClientException message."""
    match = _API_ERROR.match(message)
    if match is None:
        return 0, message
    body = match[2]
    try:
        content = ast.literal_eval(body)
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        return int(match[1]), str(json.loads(text).get("error", text))
    except (ValueError, SyntaxError, AttributeError):
        return int(match[1]), body[:300]


def __getattr__(name: str) -> Any:
    if name == "ReplaySource":  # imported lazily: it needs pandas
        from rollout_core.replay import ReplaySource

        return ReplaySource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
