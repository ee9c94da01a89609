"""Run telemetry pushed to a Pushgateway, with totals kept in Redis so the counters count.

Each run adds its decisions and status to totals in Redis in one MULTI pipeline that also
reads every total back, then PUTs the whole set to the group `job="rollout_controller"` with
a dedicated registry: the pushed `_total` values count across runs and workers, and a PUT
that replaces the group still carries every feature and the last success time.

Redis keys:
    rollout:telemetry:changes_total   hash  "feature|result" -> decisions counted
    rollout:telemetry:runs_total      hash  status -> runs counted
    rollout:telemetry:percent         hash  feature -> the percent last reported
    rollout:telemetry:last_success    string  Unix seconds of the last ok run the schedule created
    rollout:telemetry:last_run        string  Unix seconds of the last run
    rollout:telemetry:unconfirmed_writes_total  hash  feature -> writes no replica acknowledged

Only a run the deployment's schedule created moves last_success (the flow reads Prefect's
`auto_scheduled`): any other run (`scheduled=False`: a fast abort, `rollout run`, a manual
deployment run) counts in every total (runs, changes, percents, last_run) but leaves
last_success alone, so a controller whose schedule is broken does not look healthy
(RolloutControllerStalled) while alerts start abort runs or an on-call runs it by hand.

Every run status (ok, prom_unreachable, redis_error, error) is pushed from 0, so the first
failure of a kind is a 0 -> 1 step that `increase()` sees (RolloutControllerFailing); so is
every result (promote, rollback, hold) of a feature that has decided once.

When Redis fails, this run's counts are added to the Pushgateway's own copy of the group
(read from its /metrics) and pushed, so runs_total{status="redis_error"} shows; they also wait
in this object and join Redis on its next successful run. Counts of a process that ends
before Redis returns live only in the Pushgateway and drop back at the next push from Redis
(Prometheus reads that as a counter reset).

`record_run` never raises: a push that fails is a warning; a persisted total that does not
parse (a stray `HSET rollout:telemetry:runs_total ok abc`, a key of the wrong type) is repaired
in Redis, named in the returned status and logged. A corrupt counter restarts from this run's
count (Prometheus reads that as a counter reset); a corrupt percent or time is deleted.
The sink reads no environment: the shell passes the URL (and basic auth) explicitly.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import math
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "UNCONFIRMED_KEY",
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
UNCONFIRMED_KEY = KEY_PREFIX + "unconfirmed_writes_total"
# a run's counts are written with a marker under this prefix, in the same MULTI/EXEC: after a
# lost reply (a failover mid-write) the marker says whether they landed, so a retry on the new
# master neither loses nor doubles them
COUNTED_PREFIX = KEY_PREFIX + "counted:"
COUNTED_TTL_SECONDS = 86_400
# waits before each retry of the totals' write while Sentinel elects a new master (~1-5 s)
REDIS_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
RUN_STATUSES = ("ok", "prom_unreachable", "redis_error", "error")
_PREFIX = "rollout_controller_"
_MAX_COUNT = 2**63 - 1  # Redis' HINCRBY range

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
    unconfirmed: dict[str, float] = field(default_factory=dict)  # feature -> writes

    def add(self, other: Totals) -> None:
        """Add other's counts; its percents and times, when set, replace these."""
        for pair, count in other.changes.items():
            self.changes[pair] = self.changes.get(pair, 0) + count
        for feature, count in other.unconfirmed.items():
            self.unconfirmed[feature] = self.unconfirmed.get(feature, 0) + count
        for status, count in other.runs.items():
            self.runs[status] = self.runs.get(status, 0) + count
        self.percents.update(other.percents)
        self.last_success = other.last_success or self.last_success
        self.last_run = other.last_run or self.last_run


def run_totals(
    results: Mapping[str, Action],
    percents: Mapping[str, float],
    status: str,
    at: datetime,
    scheduled: bool = True,
) -> Totals:
    """One run as totals to add: a count per decision and one for the status; its time as the
    last success only for a run the schedule created that went well (`scheduled`)."""
    seconds = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return Totals(
        changes={(feature, str(action)): 1 for feature, action in results.items()},
        runs={status: 1},
        percents={feature: float(percent) for feature, percent in percents.items()},
        last_success=seconds if status == "ok" and scheduled else None,
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
        # every result of a feature that has decided once, from 0: the first rollback is a
        # 0 -> 1 step too
        features = {feature for feature, _ in totals.changes}
        zeros = {(feature, str(action)): 0.0 for feature in features for action in Action}
        for (feature, result), count in sorted((zeros | totals.changes).items()):
            changes.add_metric([feature, result], count)
        runs = CounterMetricFamily(
            _PREFIX + "runs",
            "Controller runs by status (ok, prom_unreachable, redis_error, error).",
            labels=["status"],
        )
        # every status from 0, so increase() sees a status's first run (a 0 -> 1 step)
        counts = {status: 0.0 for status in RUN_STATUSES} | totals.runs
        for status, count in sorted(counts.items()):
            runs.add_metric([status], count)
        percent = GaugeMetricFamily(
            _PREFIX + "percent",
            "Rollout percent of each feature after the last run that reported it.",
            labels=["feature"],
        )
        for feature, value in sorted(totals.percents.items()):
            percent.add_metric([feature], value)
        yield from (changes, runs, percent)
        if totals.unconfirmed:
            unconfirmed = CounterMetricFamily(
                _PREFIX + "unconfirmed_writes",
                "Flag writes applied on the Redis master that no replica acknowledged in time.",
                labels=["feature"],
            )
            for feature, count in sorted(totals.unconfirmed.items()):
                unconfirmed.add_metric([feature], count)
            yield unconfirmed
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
    """The group `job` (no other grouping labels) out of a Pushgateway's /metrics text.

    Like the Redis totals, it holds counted statuses and decisions only (the pushed 0s are
    implied)."""
    totals = Totals()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("job") != job or labels.get("instance", "") != "":
                continue
            name = sample.name.removeprefix(_PREFIX)
            feature, result, status = (labels.get(k) for k in ("feature", "result", "status"))
            if name == "changes_total" and feature is not None and result is not None:
                if sample.value:  # the pushed 0s are implied, as in Redis
                    totals.changes[(feature, result)] = sample.value
            elif name == "runs_total" and status is not None and sample.value:
                totals.runs[status] = sample.value  # the 0s of uncounted statuses are implied
            elif name == "percent" and feature is not None:
                totals.percents[feature] = sample.value
            elif name == "last_success_timestamp_seconds":
                totals.last_success = sample.value
            elif name == "last_run_timestamp_seconds":
                totals.last_run = sample.value
    return totals


class PushgatewayTelemetry:
    """The TelemetrySink: totals in Redis, the whole set PUT to the Pushgateway.

    `url` is the Pushgateway (empty: not configured, a warning per run). Basic auth comes from
    `http://user:pass@host` or `auth=(user, password)` and never reaches a log line.
    """

    def __init__(
        self,
        url: str,
        *,
        redis_client: redis.Redis,
        auth: tuple[str, str] | None = None,
        job: str = "rollout_controller",
        timeout: float = 5.0,
        push: PushFunction = push_to_gateway,
        read_gateway: ReadFunction | None = None,
        redis_retry_delays: Sequence[float] = REDIS_RETRY_DELAYS,
    ) -> None:
        raw = (url or "").rstrip("/")
        self._gateway, self._auth = split_credentials(raw)
        self._auth = self._auth or auth
        self.url = redact_url(raw)
        self.job = job
        self.timeout = timeout
        self.pending = Totals()  # counts of runs whose Redis write failed, owed to Redis
        self._pending_marker: str | None = None  # the marker the owed counts were sent with
        self._redis = redis_client
        self._retry_delays = tuple(redis_retry_delays)
        self._push = push
        self._read_gateway = read_gateway or read_metrics_text

    def record_run(
        self,
        results: Mapping[str, Action],
        percents: Mapping[str, float],
        status: str,
        at: datetime,
        unconfirmed: Sequence[str] = (),
        scheduled: bool = True,
    ) -> str:
        """Count the run, push every total; a short status for the run log, never an error.

        "pushed" (or "pushed (redis down: ...)") when all went well; anything else names
        what went wrong (an unreachable gateway, repaired totals) for the run's warning.
        `unconfirmed`: features whose write no replica acknowledged (one count each).
        `scheduled=False` (a run the schedule did not create): counted, but last_success
        does not move."""
        try:
            return self._record_run(results, percents, status, at, unconfirmed, scheduled)
        except Exception as exc:  # the contract: a decision never depends on telemetry
            log.exception("telemetry: run not recorded")
            return f"telemetry not recorded: {type(exc).__name__}: {exc}"

    def _record_run(
        self,
        results: Mapping[str, Action],
        percents: Mapping[str, float],
        status: str,
        at: datetime,
        unconfirmed: Sequence[str] = (),
        scheduled: bool = True,
    ) -> str:
        notes: list[str] = []
        if status not in RUN_STATUSES:
            log.warning("telemetry: unknown run status %r counted as 'error'", status)
            status = "error"
        usable = {name: value for name, value in percents.items() if _finite(value) is not None}
        for name in percents.keys() - usable.keys():
            notes.append(f"percent of {name} is {percents[name]!r}, not a number; not reported")
        run = run_totals(results, usable, status, at, scheduled)
        run.unconfirmed = {feature: 1 for feature in unconfirmed}
        totals, repaired = self._persist(run)
        notes += repaired
        for note in notes:
            log.warning("telemetry: %s", note)
        warning = "; ".join(notes)
        if not self._gateway:
            log.warning("telemetry: PUSHGATEWAY_URL is not set; run metrics were not pushed")
            return _joined("pushgateway not configured", warning)
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
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = _reason(exc, self.timeout)
            log.warning("telemetry: pushgateway %s unreachable (%s); not pushed", self.url, reason)
            return _joined(f"pushgateway unreachable: {reason}", warning)
        if warning:
            return f"{warning}; pushed"
        return "pushed" if not self.pending.runs else "pushed (redis down: counts kept for later)"

    def _persist(self, run: Totals) -> tuple[Totals | None, list[str]]:
        """Add what is owed to the Redis totals and read them all back, in one round trip;
        repair what does not parse. (None, []) when Redis fails: the counts stay owed."""
        if self._pending_marker is not None:
            # the owed counts may have landed before their reply was lost: then they are in
            # Redis already, and adding them again would count them twice
            with contextlib.suppress(redis.RedisError):
                if self._redis.exists(self._pending_marker):
                    self.pending, self._pending_marker = Totals(), None
        owed = Totals()
        owed.add(self.pending)
        owed.add(run)
        marker = COUNTED_PREFIX + uuid.uuid4().hex
        error: redis.RedisError | None = None
        counted: list[tuple[str, str]] = []
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            time.sleep(delay)
            try:
                if attempt and self._redis.exists(marker):  # the lost reply's write landed
                    pipe, counted = self._redis.pipeline(transaction=False), []  # reads only
                    _read_totals(pipe)
                else:
                    pipe, counted = self._counting(owed, run, marker)
                replies = pipe.execute(raise_on_error=False)
                break
            except redis.RedisError as exc:
                error = exc
        else:
            log.warning(
                "telemetry: Redis failed (%s: %s); totals come from the pushgateway",
                type(error).__name__,
                error,
            )
            self.pending, self._pending_marker = owed, marker
            return None, []
        self.pending, self._pending_marker = Totals(), None
        failed = {field for field, reply in zip(counted, replies, strict=False) if _is_error(reply)}
        changes, runs, percents, times = replies[-4:]
        repair = _Repair()
        change_counts = {f"{k[0]}|{k[1]}": v for k, v in owed.changes.items()}
        totals = Totals(
            changes={
                _pair(name): value
                for name, value in repair.counters(CHANGES_KEY, changes, change_counts, failed)
            },
            runs=dict(repair.counters(RUNS_KEY, runs, owed.runs, failed)),
            percents=dict(repair.percents(percents, owed.percents)),
        )
        last_success, last_run = times if isinstance(times, list) else (None, None)
        totals.last_success = repair.time(LAST_SUCCESS_KEY, last_success)
        totals.last_run = repair.time(LAST_RUN_KEY, last_run)
        unconfirmed = replies[-5]
        totals.unconfirmed = dict(
            repair.counters(UNCONFIRMED_KEY, unconfirmed, owed.unconfirmed, failed)
        )
        return totals, repair.apply(self._redis)

    def _counting(
        self, owed: Totals, run: Totals, marker: str
    ) -> tuple[Any, list[tuple[str, str]]]:
        """One MULTI/EXEC adding `owed` to the totals and setting `marker`, then the reads."""
        pipe = self._redis.pipeline(transaction=True)
        counted: list[tuple[str, str]] = []  # (key, field) of each HINCRBY, in order
        for (feature, result), count in owed.changes.items():
            pipe.hincrby(CHANGES_KEY, f"{feature}|{result}", int(count))
            counted.append((CHANGES_KEY, f"{feature}|{result}"))
        for status, count in owed.runs.items():
            pipe.hincrby(RUNS_KEY, status, int(count))
            counted.append((RUNS_KEY, status))
        if owed.percents:
            percent_fields: dict[Any, Any] = {f: repr(p) for f, p in owed.percents.items()}
            pipe.hset(PERCENT_KEY, mapping=percent_fields)
        if owed.last_success is not None:
            pipe.set(LAST_SUCCESS_KEY, repr(owed.last_success))
        pipe.set(LAST_RUN_KEY, repr(run.last_run))
        for feature, count in owed.unconfirmed.items():
            pipe.hincrby(UNCONFIRMED_KEY, feature, int(count))
            counted.append((UNCONFIRMED_KEY, feature))
        pipe.set(marker, "1", ex=COUNTED_TTL_SECONDS)
        _read_totals(pipe)
        return pipe, counted

    def _handler(
        self, url: str, method: str, timeout: float | None, headers: list[Any], data: bytes
    ) -> Callable[[], None]:
        user, password = self._auth or (None, None)
        return basic_auth_handler(url, method, timeout, headers, data, user, password)


def _read_totals(pipe: Any) -> None:
    """The five reads every persist ends with (the replies' last five)."""
    pipe.hgetall(UNCONFIRMED_KEY)
    pipe.hgetall(CHANGES_KEY)
    pipe.hgetall(RUNS_KEY)
    pipe.hgetall(PERCENT_KEY)
    pipe.mget(LAST_SUCCESS_KEY, LAST_RUN_KEY)


class _Repair:
    """Parses the totals read back from Redis, collecting the writes that repair bad values."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.deletes: list[tuple[str, str | None]] = []  # (key, hash field or None)
        self.resets: list[tuple[str, str, str]] = []  # (key, field, value)

    def counters(
        self,
        key: str,
        reply: Any,
        owed: Mapping[str, float],
        failed: set[tuple[str, str]],
    ) -> Iterator[tuple[str, float]]:
        """(field, count) of a counter hash; a bad count restarts at what this run owed."""
        if not isinstance(reply, dict):
            self._replace_key(key, reply, {name: repr(int(n)) for name, n in owed.items()})
            yield from ((name, float(count)) for name, count in owed.items())
            return
        for raw_field, raw_value in reply.items():
            name = _text(raw_field)
            count = _count(raw_value)
            if count is None or (key, name) in failed:
                restart = int(owed.get(name, 0))
                self.notes.append(
                    f"{key} {name} was {_shown(raw_value)}, not a count; reset to {restart}"
                )
                self.resets.append((key, name, str(restart)))
                count = restart
            yield name, float(count)

    def percents(self, reply: Any, owed: Mapping[str, float]) -> Iterator[tuple[str, float]]:
        """(feature, percent); a bad percent is deleted (this run's own are always good)."""
        if not isinstance(reply, dict):
            self._replace_key(PERCENT_KEY, reply, {name: repr(p) for name, p in owed.items()})
            yield from owed.items()
            return
        for raw_field, raw_value in reply.items():
            name = _text(raw_field)
            percent = _finite(_text(raw_value))
            if percent is None:
                self.notes.append(f"{PERCENT_KEY} {name} was {_shown(raw_value)}; deleted")
                self.deletes.append((PERCENT_KEY, name))
                continue
            yield name, percent

    def time(self, key: str, raw: Any) -> float | None:
        """Unix seconds, or None (absent, or not a number: deleted)."""
        if raw is None:
            return None
        seconds = _finite(_text(raw)) if isinstance(raw, bytes | str) else None
        if seconds is None:
            self.notes.append(f"{key} was {_shown(raw)}, not Unix seconds; deleted")
            self.deletes.append((key, None))
        return seconds

    def _replace_key(self, key: str, reply: Any, fields: Mapping[str, str]) -> None:
        self.notes.append(f"{key} could not be read as a hash ({_shown(reply)}); replaced")
        self.deletes.append((key, None))
        self.resets += [(key, name, value) for name, value in fields.items()]

    def apply(self, client: redis.Redis) -> list[str]:
        """Write the repairs in one transaction; the notes say what was found, and what was
        pushed instead (and whether the repair failed: the next run finds the same values)."""
        if not self.notes:
            return []
        pipe = client.pipeline(transaction=True)
        for key, hash_field in self.deletes:
            if hash_field is None:
                pipe.delete(key)
            else:
                pipe.hdel(key, hash_field)
        for key, name, value in self.resets:
            pipe.hset(key, name, value)
        found = [f"corrupt total {note}" for note in self.notes]
        try:
            pipe.execute()
        except redis.RedisError as exc:
            failed = f"the repair was not written ({type(exc).__name__}: {exc}); next run retries"
            return [*found, failed]
        return found


def read_metrics_text(gateway: str, timeout: float, auth: tuple[str, str] | None) -> str:
    """GET the Pushgateway's /metrics (every pushed group) as text."""
    request = urllib.request.Request(f"{gateway}/metrics")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read()).decode("utf-8")


def _count(raw: Any) -> int | None:
    """A persisted counter: a non-negative integer in Redis' range, else None."""
    text = _text(raw) if isinstance(raw, bytes | str) else ""
    if not (text.isascii() and text.isdigit()):
        return None
    count = int(text)
    return count if count <= _MAX_COUNT else None


def _finite(value: Any) -> float | None:
    """A finite float out of a number or its text, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _is_error(reply: Any) -> bool:
    return isinstance(reply, Exception)


def _shown(raw: Any) -> str:
    """A stored value (or the error reading it) for a message, quoted and cut short."""
    if isinstance(raw, Exception):
        text = str(raw)
    elif isinstance(raw, bytes | str):
        text = repr(_text(raw))
    else:
        text = f"<{type(raw).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _joined(status: str, warning: str) -> str:
    return f"{status}; {warning}" if warning else status


def _pair(field_name: str) -> tuple[str, str]:
    feature, _, result = field_name.partition("|")
    return feature, result


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _reason(exc: Exception, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return str(cause) or type(cause).__name__
