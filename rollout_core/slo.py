"""SLO readings from Prometheus, with one query per distinct PromQL text per fetch.

Features that share an SLO profile with `group_by: <label>` share its queries: each query
returns one series per label value and each feature takes the series whose label equals its
`series_key`. Without `group_by` a query must return at most one series.

Each SLO is read on its own. An empty result is no series (None; the policy reads it as 0 for
a count SLO with `absent_is_zero`); NaN and ±Inf stay as they are, and the policy reads them as
no data, never as 0. A query that fails is that SLO's `QueryError`, never the whole feature's:
Prometheus' 400 `bad_data` and a result of the wrong shape are configuration errors; 422 and
503 (`execution`, `timeout`, ...) are transient, retried here a few times, then reported on
the SLO. A query that gets no answer (refused, timed out, a proxy's 5xx) while others are
answered is that SLO's transient error too, so one slow query cannot block the rollback
another SLO demands; after two unanswered in a row the rest are not sent. Only a Prometheus
that answers no query at all raises MetricsUnavailable.
`ReplaySource` (a replayed frame, for backtests and the demo) lives in `rollout_core.replay`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.errors import ConfigError, MetricsUnavailable, RolloutError
from rollout_core.model import QueryError, SloReading, SloSnapshot
from rollout_core.urls import redact_url, split_credentials

if TYPE_CHECKING:
    from rollout_core.replay import ReplaySource

__all__ = [
    "Answer",
    "HttpQueryClient",
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


@dataclass(frozen=True)
class Series:
    """One series of an instant-query result: its labels and its value (NaN kept as NaN)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Rejected:
    """A query that gave no result: Prometheus' error (`kind` is its `errorType`, `status` the
    HTTP status), a result of the wrong shape (`kind` "bad_result", `status` None), or no
    answer at all (`kind` "unreachable", `answered` False: refused or timed out)."""

    kind: str
    detail: str
    status: int | None = None
    transient: bool = False
    answered: bool = True


QueryOutcome = tuple[Series, ...] | Rejected


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of `/api/v1/query`: its status and its JSON body (None if not JSON)."""

    status: int
    body: Any


class QueryClient(Protocol):
    """Sends one instant query; raises requests.RequestException when nothing answered."""

    def query(self, promql: str, params: Mapping[str, str]) -> Answer: ...


class HttpQueryClient:
    """Prometheus' `/api/v1/query` over one requests session: an explicit timeout and no
    library retries (the source retries transient query errors itself, the caller outages)."""

    def __init__(
        self,
        url: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.endpoint = f"{url}/api/v1/query"
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers.update(dict(headers or {}))
        self._session.auth = auth
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, HTTPAdapter(max_retries=0))

    def query(self, promql: str, params: Mapping[str, str]) -> Answer:
        """One answer read whole within `timeout` seconds of the answer's start (requests'
        timeout bounds each socket read only, so a dripping server could hold it for hours):
        requests.Timeout past it; each read also waits at most `timeout`."""
        return self._get(self.endpoint, {"query": promql, **params})

    def query_range(self, promql: str, params: Mapping[str, str]) -> Answer:
        """One `/api/v1/query_range` read (`start`, `end`, `step` in params), same handling:
        read whole within `timeout` seconds of its start, or requests.Timeout."""
        return self._get(self.endpoint + "_range", {"query": promql, **params})

    def _get(self, url: str, params: Mapping[str, str]) -> Answer:
        deadline = time.monotonic() + self.timeout
        with self._session.get(url, params=params, timeout=self.timeout, stream=True) as response:
            content = _read_until(response, deadline, self.timeout)
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        return Answer(response.status_code, body)


def _read_until(response: requests.Response, deadline: float, timeout: float) -> bytes:
    """The body, decoded as sent (gzip), read in whatever pieces arrive; urllib3's own
    errors become the requests errors the source turns into MetricsUnavailable."""
    chunks: list[bytes] = []
    try:
        while chunk := response.raw.read1(_READ_SIZE, decode_content=True):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise requests.Timeout(f"timed out: no complete answer within {timeout:g}s")
    except requests.Timeout:
        raise  # the deadline above (an OSError too, so not to be read as a broken answer)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.Timeout(f"timed out: {exc}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise requests.ConnectionError(f"the answer broke off: {exc}") from exc
    return b"".join(chunks)


_READ_SIZE = 65536


def distinct_queries(specs: Sequence[FeatureSpec]) -> list[str]:
    """Every PromQL text the specs need, each once, in first-seen order."""
    return list(dict.fromkeys(q for spec in specs for slo in spec.slos for q in slo.queries))


def parse_result(raw: Any, result_type: str | None = None) -> tuple[Series, ...]:
    """An instant vector or scalar from the API's `data.result` (`result_type` its
    `data.resultType`, when known); ValueError for anything else, a string result included."""
    if result_type not in (None, "vector", "scalar"):
        raise ValueError(_NOT_INSTANT.replace("a range vector or a string", f"a {result_type}"))
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
        return (Series({}, float(raw[1])),)  # a scalar: [time, "value"]
    try:
        return tuple(Series(dict(item.get("metric", {})), float(item["value"][1])) for item in raw)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        raise ValueError(_NOT_INSTANT) from None


_NOT_INSTANT = (
    "a range vector or a string, not an instant vector; wrap a range selector in a function "
    "such as increase(), and query a number, not a string"
)


class QueryResults:
    """One fetch's query outcomes; grouped results are indexed by label value on first use,
    so picking each of N features' series costs O(1), not O(N)."""

    def __init__(self, outcomes: Mapping[str, QueryOutcome]) -> None:
        self.outcomes = outcomes
        self._by_label: dict[tuple[str, str], dict[str, list[Series]]] = {}
        self._by_segment: dict[
            tuple[str, str | None, tuple[str, ...]],
            dict[tuple[str | None, tuple[str, ...]], list[Series]],
        ] = {}

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

    def segmented(
        self, query: str, series: tuple[Series, ...], group: str | None, labels: tuple[str, ...]
    ) -> dict[tuple[str | None, tuple[str, ...]], list[Series]]:
        """The series indexed by (group_by value, segment label values), built once per query:
        picking each of N features x S segments costs O(1)."""
        index = self._by_segment.get((query, group, labels))
        if index is None:
            index = {}
            for item in series:
                found = item.labels
                if (group is not None and group not in found) or any(
                    label not in found for label in labels
                ):
                    continue
                key = (found[group] if group is not None else None, tuple(found[x] for x in labels))
                index.setdefault(key, []).append(item)
            self._by_segment[(query, group, labels)] = index
        return index


class _Unreadable(Exception):
    """One query gave this SLO no reading; becomes the reading's QueryError."""

    def __init__(self, query: str, rejected: Rejected, labels: tuple[Series, ...] = ()) -> None:
        super().__init__(rejected.detail)
        self.query, self.rejected = query, rejected
        self.labels = tuple(item.labels for item in labels)


def snapshot_for(spec: FeatureSpec, results: QueryResults, at: datetime) -> SloSnapshot:
    """One feature's readings picked out of the shared query outcomes; an SLO whose query
    failed carries its QueryError, and the other SLOs keep their values."""
    return SloSnapshot(spec.name, {slo.name: _reading(spec, slo, results) for slo in spec.slos}, at)


def _reading(spec: FeatureSpec, slo: SloSpec, results: QueryResults) -> SloReading:
    try:
        return _values(spec, slo, results)
    except _Unreadable as problem:
        rejected = problem.rejected
        error = QueryError(
            slo=slo.name,
            query=problem.query,
            kind=rejected.kind,
            detail=rejected.detail,
            transient=rejected.transient,
            status=rejected.status,
            labels=problem.labels,
        )
        return SloReading(slo.name, None, None, error)


def _values(spec: FeatureSpec, slo: SloSpec, results: QueryResults) -> SloReading:
    if slo.ratio is not None:
        total = _pick(spec, slo, slo.ratio.total, results)
        errors = _pick(spec, slo, slo.ratio.errors, results)
        if total is None or not math.isfinite(total):
            return SloReading(slo.name, total, None)  # no series, or NaN/Inf: no data
        if total <= 0 or errors is None:
            return SloReading(slo.name, None, total)
        return SloReading(slo.name, errors / total if math.isfinite(errors) else errors, total)
    assert slo.query is not None
    value = _pick(spec, slo, slo.query, results)  # None (no series) stays None: the policy
    samples = _pick(spec, slo, slo.samples, results) if slo.samples else None
    return SloReading(slo.name, value, samples)


def _pick(spec: FeatureSpec, slo: SloSpec, query: str, results: QueryResults) -> float | None:
    """This feature's value in the query's result: None when absent, NaN/Inf as they are."""
    outcome = results.outcomes[query]
    if isinstance(outcome, Rejected):
        raise _Unreadable(query, outcome)
    if spec.segment_match and slo.name not in spec.templated_slos:
        return _pick_segment(spec, slo, query, outcome, results)
    label = slo.group_by
    if label is None:
        if len(outcome) > 1:
            fix = "wrap it in sum(...) or set group_by to the label that names the feature"
            raise _Unreadable(query, _shape(f"{len(outcome)} series; {fix}"), outcome)
        mine = list(outcome)
    else:
        index = results.grouped(query, outcome, label)
        if outcome and not index:
            fix = f"aggregate it with sum by ({label}) (...) or remove group_by"
            raise _Unreadable(
                query, _shape(f"series without the label {label!r}; {fix}", "no_group_label")
            )
        mine = index.get(spec.series_key, [])
        if len(mine) > 1:
            fix = f"aggregate it with sum by ({label}) (...)"
            detail = f"{len(mine)} series with {label}={spec.series_key!r}; {fix}"
            raise _Unreadable(query, _shape(detail), tuple(mine))
    return mine[0].value if mine else None


def _pick_segment(
    spec: FeatureSpec,
    slo: SloSpec,
    query: str,
    outcome: tuple[Series, ...],
    results: QueryResults,
) -> float | None:
    """A segment's value in a query grouped by the segment label(s) (and group_by, if any)."""
    labels = tuple(label for label, _ in spec.segment_match)
    index = results.segmented(query, outcome, slo.group_by, labels)
    if outcome and not index:
        wanted = ", ".join((*([slo.group_by] if slo.group_by else []), *labels))
        fix = (
            f"aggregate it with sum by ({wanted}) (...), or write the query per segment with "
            "{{segment}}"
        )
        detail = f"series without the segment label(s) {', '.join(labels)}; {fix}"
        raise _Unreadable(query, _shape(detail, "no_segment_label"))
    key = (spec.series_key if slo.group_by else None, tuple(v for _, v in spec.segment_match))
    mine = index.get(key, [])
    if len(mine) > 1:
        wanted = ", ".join((*([slo.group_by] if slo.group_by else []), *labels))
        detail = (
            f"{len(mine)} series for segment {spec.segment!r}; aggregate with sum by ({wanted})"
        )
        raise _Unreadable(query, _shape(detail), tuple(mine))
    return mine[0].value if mine else None


def _shape(detail: str, kind: str = "several_series") -> Rejected:
    return Rejected(kind, detail)


class PrometheusSource:
    """The MetricsSource over Prometheus' HTTP API, evaluated at the `at` of each fetch.

    An explicit timeout and no library retries, so an outage raises MetricsUnavailable in
    about one timeout (the caller retries that). A transient query error (422, 503) is retried
    here, `query_retries` times with a backoff doubling from `retry_backoff` seconds, for the
    failing queries only. `queries_sent` counts every query sent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        client: QueryClient | None = None,
        query_retries: int = 2,
        retry_backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise ConfigError(
                "PROMETHEUS_BASE_URL is not set; export it (e.g. http://127.0.0.1:9090) "
                "or pass base_url"
            )
        if query_retries < 0 or retry_backoff < 0:
            raise ValueError(
                f"query_retries {query_retries} and retry_backoff {retry_backoff} must be >= 0"
            )
        plain, url_auth = split_credentials(base_url.rstrip("/"))
        self.url = redact_url(base_url.rstrip("/"))
        self.timeout = timeout
        self.query_retries, self.retry_backoff = query_retries, retry_backoff
        self.queries_sent = 0
        self._sleep = sleep
        self._client = client or HttpQueryClient(plain, timeout, headers, auth or url_auth)

    def fetch(
        self, specs: Sequence[FeatureSpec], at: datetime
    ) -> Mapping[str, SloSnapshot | RolloutError]:
        """Every feature's readings at `at` (naive means UTC); MetricsUnavailable if Prometheus
        cannot answer; a failed query is the QueryError of each SLO that uses it."""
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        params = {"time": f"{moment.timestamp():.3f}"}
        outcomes = self._run_all(distinct_queries(specs), params)
        for attempt in range(self.query_retries):
            # a query that got no answer already waited its timeout: not retried here
            failing = [
                q
                for q, o in outcomes.items()
                if isinstance(o, Rejected) and o.transient and o.answered
            ]
            if not failing:
                break
            self._sleep(self.retry_backoff * 2**attempt)
            outcomes.update({query: self._run(query, params) for query in failing})
        results = QueryResults(outcomes)
        return {spec.name: snapshot_for(spec, results, moment) for spec in specs}

    def _run_all(
        self, queries: Sequence[str], params: Mapping[str, str]
    ) -> dict[str, QueryOutcome]:
        """Every query once. One that gets no answer (refused, timed out) while others are
        answered is that query's transient error, so it cannot block another SLO's rollback.
        After two unanswered in a row the rest are not sent (a hung Prometheus costs two
        timeouts, not one per query); when no query was answered, MetricsUnavailable."""
        outcomes: dict[str, QueryOutcome] = {}
        silent: list[Rejected] = []  # the unanswered queries since the last answer
        for query in queries:
            if len(silent) >= 2:
                detail = f"not sent: Prometheus stopped answering ({silent[-1].detail})"
                outcomes[query] = Rejected("unreachable", detail, transient=True, answered=False)
                continue
            outcome = outcomes[query] = self._run(query, params)
            if isinstance(outcome, Rejected) and not outcome.answered:
                silent.append(outcome)
            else:
                silent.clear()
        answered = [o for o in outcomes.values() if not isinstance(o, Rejected) or o.answered]
        if outcomes and not answered:
            first = next(o for o in outcomes.values() if isinstance(o, Rejected))
            raise MetricsUnavailable(
                f"Prometheus at {self.url} is unreachable: {first.detail}; "
                "check that it runs and PROMETHEUS_BASE_URL points at it"
            )
        return outcomes

    def _run(self, query: str, params: Mapping[str, str]) -> QueryOutcome:
        self.queries_sent += 1
        try:
            answer = self._client.query(query, params)
        except requests.RequestException as exc:
            return Rejected("unreachable", self._reason(exc), transient=True, answered=False)
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("status") == "success":
            try:
                data = body["data"]
                return parse_result(data["result"], data.get("resultType"))
            except (KeyError, TypeError):
                pass  # not the API's shape: refused below
            except ValueError as exc:
                return Rejected("bad_result", str(exc))
        elif body.get("status") == "error" and "errorType" in body and answer.status != 200:
            if answer.status in (401, 403):
                raise MetricsUnavailable(
                    f"Prometheus at {self.url} answered HTTP {answer.status}: "
                    f"{body.get('error')}; check the credentials"
                )
            kind, detail = str(body["errorType"]), str(body.get("error", ""))
            return Rejected(kind, detail, answer.status, transient=answer.status != 400)
        if answer.status >= 500:  # e.g. a proxy's 502/504 on one slow query: that query's
            detail = f"HTTP {answer.status} without a Prometheus error"
            return Rejected("unreachable", detail, answer.status, transient=True, answered=False)
        if answer.status != 200:
            hint = "check the credentials" if answer.status in (401, 403) else "retry later"
            raise MetricsUnavailable(
                f"Prometheus at {self.url} answered HTTP {answer.status} without a Prometheus "
                f"error; {hint}"
            )
        raise MetricsUnavailable(
            f"{self.url} did not answer like a Prometheus API; check PROMETHEUS_BASE_URL"
        )

    def _reason(self, exc: requests.RequestException) -> str:
        text = str(exc).lower()
        if isinstance(exc, requests.Timeout) or "timed out" in text:
            return f"no answer within {self.timeout:g}s"
        if "refused" in text:
            return "connection refused"
        return type(exc).__name__


def __getattr__(name: str) -> Any:
    if name == "ReplaySource":  # imported lazily: it needs pandas
        from rollout_core.replay import ReplaySource

        return ReplaySource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
