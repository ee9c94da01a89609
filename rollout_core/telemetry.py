"""Run telemetry pushed to a Pushgateway, with totals kept in Redis so the counters count.

Each run adds its decisions and status to totals in Redis in one MULTI pipeline that also
reads every total back, then PUTs the whole set to the group `job="rollout_controller"` with
a dedicated registry: the pushed `_total` values count across runs and workers, and a PUT
that replaces the group still carries every feature and the last success time.

Redis keys:
    rollout:telemetry:changes_total   hash  "feature|result" -> decisions counted
    rollout:telemetry:runs_total      hash  status -> runs counted
    rollout:telemetry:percent         hash  feature -> the percent last reported
    rollout:telemetry:last_success    string  Unix seconds of the last run with status ok
    rollout:telemetry:last_run        string  Unix seconds of the last run

When Redis fails, this run's counts are added to the Pushgateway's own copy of the group
(read from its /metrics) and pushed, so runs_total{status="redis_error"} shows; they also wait
in this object and join Redis on its next successful run. Counts of a process that ends
before Redis returns live only in the Pushgateway and drop back at the next push from Redis
(Prometheus reads that as a counter reset). A push that fails is a warning, never an error.
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler
from prometheus_client.parser import text_string_to_metric_families

from rollout_core.model import Action
from rollout_core.urls import redact_url, split_credentials

__all__ = [
    "CHANGES_KEY",
    "KEY_PREFIX",
    "LAST_RUN_KEY",
    "LAST_SUCCESS_KEY",
    "PERCENT_KEY",
    "RUNS_KEY",
    "RUN_STATUSES",
    "PushgatewayTelemetry",
    "Totals",
    "read_metrics_text",
    "registry_for",
    "run_totals",
    "totals_from_exposition",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "rollout:telemetry:"
CHANGES_KEY = KEY_PREFIX + "changes_total"
RUNS_KEY = KEY_PREFIX + "runs_total"
PERCENT_KEY = KEY_PREFIX + "percent"
LAST_SUCCESS_KEY = KEY_PREFIX + "last_success"
LAST_RUN_KEY = KEY_PREFIX + "last_run"
RUN_STATUSES = ("ok", "prom_unreachable", "redis_error", "error")
_PREFIX = "rollout_controller_"

PushFunction = Callable[..., None]  # prometheus_client.push_to_gateway's signature
ReadFunction = Callable[[str, float, tuple[str, str] | None], str]


@dataclass
class Totals:
    """Everything pushed: counts by (feature, result) and by status, percents, two times."""

    changes: dict[tuple[str, str], float] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)
    percents: dict[str, float] = field(default_factory=dict)
    last_success: float | None = None
    last_run: float | None = None

    def add(self, other: Totals) -> None:
        """Add other's counts; its percents and times, when set, replace these."""
        for pair, count in other.changes.items():
            self.changes[pair] = self.changes.get(pair, 0) + count
        for status, count in other.runs.items():
            self.runs[status] = self.runs.get(status, 0) + count
        self.percents.update(other.percents)
        self.last_success = other.last_success or self.last_success
        self.last_run = other.last_run or self.last_run


def run_totals(
    results: Mapping[str, Action], percents: Mapping[str, float], status: str, at: datetime
) -> Totals:
    """One run as totals to add: a count per decision and one for the status."""
    seconds = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return Totals(
        changes={(feature, str(action)): 1 for feature, action in results.items()},
        runs={status: 1},
        percents={feature: float(percent) for feature, percent in percents.items()},
        last_success=seconds if status == "ok" else None,
        last_run=seconds,
    )


class _TotalsCollector:
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        totals = self.totals
        changes = CounterMetricFamily(
            _PREFIX + "changes",
            "Rollout decisions by feature and result (promote, rollback, hold), all runs.",
            labels=["feature", "result"],
        )
        for (feature, result), count in sorted(totals.changes.items()):
            changes.add_metric([feature, result], count)
        runs = CounterMetricFamily(
            _PREFIX + "runs",
            "Controller runs by status (ok, prom_unreachable, redis_error, error).",
            labels=["status"],
        )
        for status, count in sorted(totals.runs.items()):
            runs.add_metric([status], count)
        percent = GaugeMetricFamily(
            _PREFIX + "percent",
            "Rollout percent of each feature after the last run that reported it.",
            labels=["feature"],
        )
        for feature, value in sorted(totals.percents.items()):
            percent.add_metric([feature], value)
        yield from (changes, runs, percent)
        if totals.last_success is not None:
            yield GaugeMetricFamily(
                _PREFIX + "last_success_timestamp_seconds",
                "Unix time of the last controller run that succeeded; alert when it is stale.",
                value=totals.last_success,
            )
        if totals.last_run is not None:
            yield GaugeMetricFamily(
                _PREFIX + "last_run_timestamp_seconds",
                "Unix time of the last controller run, whatever its status.",
                value=totals.last_run,
            )


def registry_for(totals: Totals) -> CollectorRegistry:
    """A dedicated registry holding exactly the totals, ready to push."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_TotalsCollector(totals))
    return registry


def totals_from_exposition(text: str, job: str) -> Totals:
    """The group `job` (no other grouping labels) out of a Pushgateway's /metrics text."""
    totals = Totals()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("job") != job or labels.get("instance", "") != "":
                continue
            name = sample.name.removeprefix(_PREFIX)
            if name == "changes_total":
                totals.changes[(labels["feature"], labels["result"])] = sample.value
            elif name == "runs_total":
                totals.runs[labels["status"]] = sample.value
            elif name == "percent":
                totals.percents[labels["feature"]] = sample.value
            elif name == "last_success_timestamp_seconds":
                totals.last_success = sample.value
            elif name == "last_run_timestamp_seconds":
                totals.last_run = sample.value
    return totals


class PushgatewayTelemetry:
    """The TelemetrySink: totals in Redis, the whole set PUT to the Pushgateway.

    `url` defaults to PUSHGATEWAY_URL; basic auth comes from `http://user:pass@host` or
    PUSHGATEWAY_USERNAME / PUSHGATEWAY_PASSWORD and never reaches a log line.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        redis_client: redis.Redis,
        job: str = "rollout_controller",
        timeout: float = 5.0,
        push: PushFunction = push_to_gateway,
        read_gateway: ReadFunction | None = None,
    ) -> None:
        raw = (url if url is not None else os.environ.get("PUSHGATEWAY_URL", "")).rstrip("/")
        self._gateway, self._auth = split_credentials(raw)
        if self._auth is None and os.environ.get("PUSHGATEWAY_USERNAME"):
            self._auth = (
                os.environ["PUSHGATEWAY_USERNAME"],
                os.environ.get("PUSHGATEWAY_PASSWORD", ""),
            )
        self.url = redact_url(raw)
        self.job = job
        self.timeout = timeout
        self.pending = Totals()  # counts of runs whose Redis write failed, owed to Redis
        self._redis = redis_client
        self._push = push
        self._read_gateway = read_gateway or read_metrics_text

    def record_run(
        self,
        results: Mapping[str, Action],
        percents: Mapping[str, float],
        status: str,
        at: datetime,
    ) -> str:
        """Count the run, push every total; a short status for the run log, never an error."""
        if status not in RUN_STATUSES:
            log.warning("telemetry: unknown run status %r counted as 'error'", status)
            status = "error"
        run = run_totals(results, percents, status, at)
        totals = self._persist(run)
        if not self._gateway:
            log.warning("telemetry: PUSHGATEWAY_URL is not set; run metrics were not pushed")
            return "pushgateway not configured"
        try:
            if totals is None:
                totals = totals_from_exposition(
                    self._read_gateway(self._gateway, self.timeout, self._auth), self.job
                )
                totals.add(run)
            self._push(
                self._gateway,
                job=self.job,
                registry=registry_for(totals),
                timeout=self.timeout,
                handler=self._handler,
            )
        except (OSError, ValueError) as exc:
            reason = _reason(exc, self.timeout)
            log.warning("telemetry: pushgateway %s unreachable (%s); not pushed", self.url, reason)
            return f"pushgateway unreachable: {reason}"
        return "pushed" if not self.pending.runs else "pushed (redis down: counts kept for later)"

    def _persist(self, run: Totals) -> Totals | None:
        """Add what is owed to the Redis totals and read them all back, in one round trip."""
        owed = Totals()
        owed.add(self.pending)
        owed.add(run)
        pipe = self._redis.pipeline(transaction=True)
        for (feature, result), count in owed.changes.items():
            pipe.hincrby(CHANGES_KEY, f"{feature}|{result}", int(count))
        for status, count in owed.runs.items():
            pipe.hincrby(RUNS_KEY, status, int(count))
        if owed.percents:
            percent_fields: dict[Any, Any] = {f: repr(p) for f, p in owed.percents.items()}
            pipe.hset(PERCENT_KEY, mapping=percent_fields)
        if owed.last_success is not None:
            pipe.set(LAST_SUCCESS_KEY, repr(owed.last_success))
        pipe.set(LAST_RUN_KEY, repr(run.last_run))
        pipe.hgetall(CHANGES_KEY)
        pipe.hgetall(RUNS_KEY)
        pipe.hgetall(PERCENT_KEY)
        pipe.mget(LAST_SUCCESS_KEY, LAST_RUN_KEY)
        try:
            *_, changes, runs, percents, (last_success, last_run) = pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "telemetry: Redis failed (%s: %s); totals come from the pushgateway",
                type(exc).__name__,
                exc,
            )
            self.pending = owed
            return None
        self.pending = Totals()
        return Totals(
            changes={_pair(_text(key)): float(value) for key, value in changes.items()},
            runs={_text(key): float(value) for key, value in runs.items()},
            percents={_text(key): float(value) for key, value in percents.items()},
            last_success=float(last_success) if last_success is not None else None,
            last_run=float(last_run) if last_run is not None else None,
        )

    def _handler(
        self, url: str, method: str, timeout: float | None, headers: list[Any], data: bytes
    ) -> Callable[[], None]:
        user, password = self._auth or (None, None)
        return basic_auth_handler(url, method, timeout, headers, data, user, password)


def read_metrics_text(gateway: str, timeout: float, auth: tuple[str, str] | None) -> str:
    """GET the Pushgateway's /metrics (every pushed group) as text."""
    request = urllib.request.Request(f"{gateway}/metrics")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read()).decode("utf-8")


def _pair(field_name: str) -> tuple[str, str]:
    feature, _, result = field_name.partition("|")
    return feature, result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _reason(exc: Exception, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return str(cause) or type(cause).__name__
