"""The whole-pass invariants (issue 9, I1-I5): generated cases, an independent oracle, checks.

One case is a feature spec, Prometheus' answer to each of its queries, the raw flag keys in
Redis, maybe a concurrent change of one key between the read and the write, dry run on or
off, and the services' hard kill. `run_case` drives `run_pass` through the real
PrometheusSource (a fake query client answers per query) and the real RedisFlagStore on the
client it is given (fakeredis in the unit suite, a real redis-server in the integration one),
then `check_invariants` asserts I1-I5 against an oracle computed from the generated numbers,
never by asking the policy what it thinks.

The hard kill (`PROVIDER_<FEATURE>_ENABLED`) lives in the services' environment; the
controller runs elsewhere and does not read it. I2 is therefore checked without an exemption
for it: a hard-killed feature that breaches is still rolled back (lowering exposure is always
safe), and a hard kill changes nothing about what the pass decides or writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
import requests
from hypothesis import assume, currently_in_test_context, event
from hypothesis import strategies as st

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.controller import FeatureOutcome, OutcomeStatus, run_pass
from rollout_core.errors import RolloutError
from rollout_core.flags import AUDIT_STREAM, FIELDS, LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action, FlagState
from rollout_core.policy import WITHOUT_TRAFFIC
from rollout_core.ports import ApplyResult, FlagChange
from rollout_core.slo import Answer, PrometheusSource
from rollout_core.stats import wilson_lower_bound
from rollout_sdk.flag_values import parse_bool_value, parse_percent_value
from rollout_sdk.keys import flag_key

FEATURE = "feat"
GROUP_LABEL = "feature"
OTHER = "other"  # a second feature in every pass, always breaching: never held by the first
HARD_KILL_VARIABLE = "PROVIDER_FEAT_ENABLED"
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
SAFE_PERCENT = 10.0

# --- Prometheus answers -------------------------------------------------------------------

# a value, 0, NaN, ±Inf, an empty result, several series, and every error kind
NUMBERS = [0.0, 1.0, 3.0, 7.0, 40.0, 150.0, 250.0, 2000.0, 0.2, 0.9]
NOT_FINITE = [math.nan, math.inf, -math.inf]
SHAPES = ["empty", "several"]
REJECTIONS = ["bad_data", "execution", "timeout"]  # 400, 422, 503
OUTAGES = ["unreachable", "client_timeout", "proxy_503"]  # no answer from Prometheus itself


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, picked in proportion to its weight."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


ANSWERS = weighted(
    (30, st.sampled_from(NUMBERS).map(lambda value: ("value", value))),
    (4, st.sampled_from(NOT_FINITE).map(lambda value: ("value", value))),
    (4, st.sampled_from(SHAPES).map(lambda shape: (shape, None))),
    (6, st.sampled_from(REJECTIONS).map(lambda kind: (kind, None))),
    (3, st.sampled_from(OUTAGES).map(lambda kind: (kind, None))),
)
# without outages: what the integration sample uses more of, so its budget goes on writes
ANSWERED = ANSWERS.filter(lambda answer: answer[0] not in OUTAGES)


def _sample(value: float) -> list[Any]:
    text = "NaN" if math.isnan(value) else ("+Inf" if value == math.inf else None)
    text = text or ("-Inf" if value == -math.inf else repr(value))
    return [NOW.timestamp(), text]


class FakePrometheus:
    """A QueryClient answering each PromQL text as the case says, the same on every retry.

    A grouped query (`group_by: feature`) answers one series per feature: the case's value
    in the series labelled with this feature, beside another feature's series that must be
    ignored; "empty" is then only the other feature's series.
    """

    def __init__(
        self, answers: Mapping[str, tuple[str, float | None]], grouped: frozenset[str]
    ) -> None:
        self.answers, self.grouped = answers, grouped

    def query(self, promql: str, params: Mapping[str, str]) -> Answer:
        kind, value = self.answers[promql]
        if kind == "unreachable":
            raise requests.ConnectionError("[Errno 111] Connection refused")
        if kind == "client_timeout":
            raise requests.ReadTimeout("Read timed out. (read timeout=10)")
        if kind == "proxy_503":
            return Answer(503, None)  # an HTML page from a proxy in front of Prometheus
        grouped = promql in self.grouped
        mine: dict[str, str] = {GROUP_LABEL: FEATURE} if grouped else {}
        noise = [{"metric": {GROUP_LABEL: "elsewhere"}, "value": _sample(99.0)}] if grouped else []
        if kind == "value":
            assert value is not None
            return _success([{"metric": mine, "value": _sample(value)}, *noise])
        if kind == "empty":
            return _success(noise)
        if kind == "several":
            series = [{"metric": {**mine, "pod": pod}, "value": _sample(1.0)} for pod in "ab"]
            return _success(series)
        status = {"bad_data": 400, "execution": 422, "timeout": 503}[kind]
        body = {"status": "error", "errorType": kind, "error": f"made-up {kind} error"}
        return Answer(status, body)


def _success(result: list[Any]) -> Answer:
    return Answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})


# --- feature specs --------------------------------------------------------------------------


@st.composite
def slo_specs(draw: st.DrawFn, index: int) -> dict[str, Any]:
    name = f"slo{index}"
    kind = draw(st.sampled_from(["ratio", "value", "count"]))
    if kind == "ratio":
        ratio = {
            "name": name,
            "ratio": {"errors": f"{name}_errors", "total": f"{name}_total"},
            "max": draw(st.sampled_from([0.01, 0.05])),
            "min_samples": draw(st.sampled_from([0, 20, 200])),
        }
        return _maybe_grouped(draw, ratio)
    slo: dict[str, Any] = {"name": name, "kind": kind, "query": f"{name}_value"}
    slo["max"] = 0.5 if kind == "value" else 5
    if draw(st.booleans()):
        slo.update(samples=f"{name}_samples", min_samples=draw(st.sampled_from([0, 50])))
    if kind == "count":
        slo["absent_is_zero"] = draw(st.booleans())
    return _maybe_grouped(draw, slo)


def _maybe_grouped(draw: st.DrawFn, slo: dict[str, Any]) -> dict[str, Any]:
    """A third of the SLOs read a query shared by features, picking their series by label."""
    if draw(st.integers(0, 2)) == 0:
        slo["group_by"] = GROUP_LABEL
    return slo


@st.composite
def feature_specs(draw: st.DrawFn) -> FeatureSpec:
    count = draw(st.integers(1, 3))
    slos = [draw(slo_specs(index)) for index in range(count)]
    has_count = any(slo.get("min_samples", 200 if "ratio" in slo else 0) > 0 for slo in slos)
    opt_in = draw(st.booleans()) or not has_count  # a spec without evidence must opt in
    return FeatureSpec.model_validate(
        {
            "name": FEATURE,
            "slos": slos,
            "safe_percent": SAFE_PERCENT,
            "promote_without_traffic": opt_in,
        }
    )


# --- flag states ----------------------------------------------------------------------------


def _time(ago: timedelta) -> str:
    return (NOW - ago).isoformat(timespec="seconds").replace("+00:00", "Z")


PERCENTS = ["0", "10", "50", "100", "37.5", "0.5", "10", "50"]
BAD_PERCENTS = ["fifty", "1e1", " 50 ", "nan", "1_0", "150", ""]
BOOLS = ["true", "false"]
ENABLED = ["true", "true", "true", "false"]
PAUSED = ["false", "false", "false", "true"]
BAD_BOOLS = ["flase", "TRUE", "yes", " true", ""]
TIMES = [
    _time(timedelta(minutes=5)),
    _time(timedelta(hours=2)),
    _time(timedelta(days=3)),
    _time(timedelta(minutes=-5)),  # in the future: another host's clock runs ahead
]
BAD_TIMES = ["yesterday", "2026-13-45T00:00Z", "99999999999", ""]
VALUES = {
    "rollout_percent": (PERCENTS, BAD_PERCENTS),
    "enabled": (ENABLED, BAD_BOOLS),
    "internal_only": (BOOLS, BAD_BOOLS),
    "paused": (PAUSED, BAD_BOOLS),
    "last_change_time": (TIMES, BAD_TIMES),
    "last_percent": (PERCENTS, BAD_PERCENTS),
    "last_rollback_time": (TIMES, BAD_TIMES),
}
# strict keys mostly valid, so most cases get as far as a decision
COMMON = {"rollout_percent": 30, "enabled": 12, "paused": 12}


def key_values(field: str) -> st.SearchStrategy[str | None]:
    """A key's raw value: absent (None), valid, or corrupt."""
    good, bad = VALUES[field]
    return weighted(
        (1, st.none()), (1, st.sampled_from(bad)), (COMMON.get(field, 3), st.sampled_from(good))
    )


FLAG_STATES = st.fixed_dictionaries({field: key_values(field) for field in FIELDS})


@dataclass(frozen=True)
class Race:
    """A change of one key by someone else, between the controller's read and its write."""

    field: str
    value: str | None  # None: the key is deleted


@st.composite
def races(draw: st.DrawFn, flags: Mapping[str, str | None]) -> Race | None:
    if not draw(st.booleans()):
        return None
    field = draw(st.sampled_from(FIELDS))
    value = draw(key_values(field))
    assume(value != flags[field])
    return Race(field, value)


@dataclass(frozen=True)
class Case:
    spec: FeatureSpec
    answers: Mapping[str, tuple[str, float | None]]
    flags: Mapping[str, str | None]
    race: Race | None
    dry_run: bool
    hard_kill: str | None  # the services' PROVIDER_FEAT_ENABLED, None = unset


def _values(*values: float) -> st.SearchStrategy[tuple[str, float | None]]:
    return st.sampled_from(values).map(lambda value: ("value", value))


def healthy_answers(slo: SloSpec) -> dict[str, st.SearchStrategy[tuple[str, float | None]]]:
    """Answers under which the SLO is healthy with plenty of traffic: without them a random
    case almost never promotes, and I1 would hold by never being put to the test."""
    counts = _values(250.0, 2000.0)
    if slo.ratio is not None:
        return {slo.ratio.errors: _values(0.0, 1.0), slo.ratio.total: counts}
    assert slo.query is not None
    value = _values(0.2) if slo.kind == "value" else _values(0.0, 3.0)
    return {slo.query: value, **({slo.samples: counts} if slo.samples else {})}


@st.composite
def cases(draw: st.DrawFn, answers: st.SearchStrategy[tuple[str, float | None]] = ANSWERS) -> Case:
    spec = draw(feature_specs())
    healthy = {q: a for slo in spec.slos for q, a in healthy_answers(slo).items()}
    mostly_healthy = draw(st.booleans())
    flags = draw(FLAG_STATES)
    return Case(
        spec=spec,
        answers={
            query: draw(weighted((6, healthy[query]), (1, answers)) if mostly_healthy else answers)
            for query in healthy
        },
        flags=flags,
        race=draw(races(flags)),
        dry_run=draw(st.booleans()),
        hard_kill=draw(st.sampled_from([None, "true", "false", "disabled", "flase"])),
    )


# --- running a case -------------------------------------------------------------------------


class RacingStore:
    """The real store, with someone else's change landing right after the read."""

    def __init__(self, store: RedisFlagStore, client: redis.Redis, race: Race | None) -> None:
        self.store, self.client, self.race = store, client, race
        self.raced = False

    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        return self.store.read(features)

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        states = self.store.read_each(features)
        if self.race is not None:
            _write_key(self.client, self.race.field, self.race.value)
            self.raced = True
        return states

    def apply(self, change: FlagChange) -> ApplyResult:
        return self.store.apply(change)

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        return self.store.apply_many(changes)

    def forget_recommendations(self, features: Sequence[str]) -> None:
        self.store.forget_recommendations(features)

    def set_percent(
        self,
        feature: str,
        percent: float,
        reason: str,
        by: str = "manual",
        *,
        at: datetime,
        rewrite: bool = False,
    ) -> ApplyResult:
        return self.store.set_percent(feature, percent, reason, by, at=at, rewrite=rewrite)


def _write_key(client: redis.Redis, field: str, value: str | None) -> None:
    if value is None:
        client.delete(flag_key(FEATURE, field))
    else:
        client.set(flag_key(FEATURE, field), value)


@contextmanager
def hard_kill(value: str | None) -> Iterator[None]:
    saved = os.environ.pop(HARD_KILL_VARIABLE, None)
    if value is not None:
        os.environ[HARD_KILL_VARIABLE] = value
    try:
        yield
    finally:
        os.environ.pop(HARD_KILL_VARIABLE, None)
        if saved is not None:
            os.environ[HARD_KILL_VARIABLE] = saved


@dataclass(frozen=True)
class Observed:
    outcome: FeatureOutcome
    other: FeatureOutcome
    before: dict[str, str | None]  # the flag keys as generated (what the controller read)
    after: dict[str, str | None]
    entries_before: list[tuple[str, dict[str, str]]]
    entries_after: list[tuple[str, dict[str, str]]]
    last_write: str | None
    raced: bool  # the concurrent change landed (the pass got as far as reading the flags)
    # a dry run is run twice on the same inputs: what the second one appended to the audit
    appended_again: list[tuple[str, dict[str, str]]]


def flag_keys(client: redis.Redis) -> dict[str, str | None]:
    """Every `flags:*` key in Redis (not only the feature's), absent ones as None."""
    keys = sorted(str(key) for key in client.keys("flags:*"))
    known = {flag_key(FEATURE, field): None for field in FIELDS}
    return {**known, **{key: cast("str | None", client.get(key)) for key in keys}}


def _entries(client: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    return cast("list[tuple[str, dict[str, str]]]", client.xrange(AUDIT_STREAM))


def grouped_queries(spec: FeatureSpec) -> frozenset[str]:
    return frozenset(q for slo in spec.slos if slo.group_by for q in slo.queries)


OTHER_SPEC = FeatureSpec.model_validate(
    {
        "name": OTHER,
        "slos": [{"name": "errors", "ratio": {"errors": "oe", "total": "ot"}, "max": 0.01}],
    }
)
OTHER_ANSWERS: dict[str, tuple[str, float | None]] = {
    "oe": ("value", 400.0),
    "ot": ("value", 2000.0),
}


def run_case(client: redis.Redis, case: Case) -> Observed:
    client.flushall()
    for field, value in case.flags.items():
        _write_key(client, field, value)
    for field, value in (("rollout_percent", "50"), ("enabled", "true"), ("paused", "false")):
        client.set(flag_key(OTHER, field), value)
    before = flag_keys(client)
    entries_before = _entries(client)
    store = RacingStore(RedisFlagStore(client), client, case.race)
    source = PrometheusSource(
        "http://127.0.0.1:9",
        client=FakePrometheus({**case.answers, **OTHER_ANSWERS}, grouped_queries(case.spec)),
        sleep=lambda _: None,
    )
    with hard_kill(case.hard_kill):
        outcomes = run_pass([case.spec, OTHER_SPEC], store, source, NOW, case.dry_run)
    after, entries_after = flag_keys(client), _entries(client)
    again: list[tuple[str, dict[str, str]]] = []
    if case.dry_run:  # the same pass again (same inputs): its recommendations are unchanged
        calm = RacingStore(store.store, client, None)
        run_pass([case.spec, OTHER_SPEC], calm, source, NOW, True)
        again = _entries(client)[len(entries_after) :]
    return Observed(
        outcome=outcomes[FEATURE],
        other=outcomes[OTHER],
        before=before,
        after=after,
        entries_before=entries_before,
        entries_after=entries_after,
        last_write=cast("str | None", client.hget(LAST_WRITE_HASH, FEATURE)),
        raced=store.raced,
        appended_again=again,
    )


# --- the oracle: computed from the generated numbers, not by the policy ---------------------

ERROR = object()  # the query gave no reading (a rejection or a wrong shape)


def _answer_value(answer: tuple[str, float | None]) -> object:
    kind, value = answer
    if kind == "value":
        return value
    return None if kind == "empty" else ERROR


def _usable(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True)
class SloTruth:
    breached: bool  # breached with evidence
    healthy: bool  # healthy with evidence
    counted: bool  # healthy with n >= min_samples > 0: the feature served traffic


def slo_truth(slo: SloSpec, answers: Mapping[str, tuple[str, float | None]]) -> SloTruth:
    values = {query: _answer_value(answers[query]) for query in slo.queries}
    if any(value is ERROR for value in values.values()):
        return SloTruth(False, False, False)
    min_samples = slo.min_samples or 0
    if slo.ratio is not None:
        errors, total = values[slo.ratio.errors], values[slo.ratio.total]
        if not (isinstance(errors, float) and isinstance(total, float)):
            return SloTruth(False, False, False)
        if not (_usable(errors) and _usable(total)) or total <= 0:
            return SloTruth(False, False, False)
        ratio = errors / total
        breached = wilson_lower_bound(ratio, total) > slo.max
        healthy = ratio <= slo.max and total >= min_samples
        return SloTruth(breached, healthy, healthy and 0 < min_samples <= total)
    assert slo.query is not None
    value = values[slo.query]
    if value is None and slo.kind == "count" and slo.absent_is_zero:
        value = 0.0
    if not _usable(value):
        return SloTruth(False, False, False)
    assert isinstance(value, float)
    samples = values[slo.samples] if slo.samples else None
    enough = min_samples == 0 or (
        isinstance(samples, float) and _usable(samples) and min_samples <= samples
    )
    breached = value > slo.max and (slo.kind == "count" or enough)
    healthy = value <= slo.max and enough
    return SloTruth(breached, healthy, healthy and min_samples > 0)


def _check_the_other_feature(
    case: Case,
    seen: Observed,
    changed: set[str],
    appended: list[tuple[str, dict[str, str]]],
    outage: bool,
    answers: Mapping[str, tuple[str, float | None]],
) -> None:
    """The other feature breaches in every pass: whatever happened to the first one, it is
    rolled back (recommended in a dry run) with its one audit entry, or, when its queries
    were not answered, left alone."""
    entries = [entry for _, entry in appended if entry["feature"] == OTHER]
    assert len(entries) + sum(entry["feature"] == FEATURE for _, entry in appended) == len(appended)
    if outage:
        assert seen.other.status is OutcomeStatus.PROM_UNREACHABLE
        assert not changed and not entries
        return
    if any(answers[query][0] in OUTAGES for query in OTHER_ANSWERS):
        assert seen.other.status is OutcomeStatus.OK and seen.other.decision is not None
        assert seen.other.decision.action is Action.HOLD
        assert not changed and not entries
        return
    assert seen.other.status is OutcomeStatus.OK, seen.other
    assert seen.other.decision is not None and seen.other.decision.action is Action.ROLLBACK
    assert len(entries) == 1 and (entries[0]["old_percent"], entries[0]["new_percent"]) == (
        "50",
        "10",
    )
    assert entries[0]["dry_run"] == ("true" if case.dry_run else "false")
    if case.dry_run:
        assert not changed
    else:
        percent = flag_key(OTHER, "rollout_percent")
        assert seen.after[percent] == "10" and percent in changed
        assert changed <= {flag_key(OTHER, field) for field in FIELDS}


def effective_answers(
    spec: FeatureSpec, answers: Mapping[str, tuple[str, float | None]]
) -> tuple[dict[str, tuple[str, float | None]], bool]:
    """What each query of the pass (the case's, then the other feature's) effectively got, and
    whether Prometheus counts as down. After two unanswered queries in a row the rest are not
    sent (unanswered too); no query answered at all is an outage of the whole pass."""
    both = {**answers, **OTHER_ANSWERS}
    order = dict.fromkeys(q for s in (spec, OTHER_SPEC) for slo in s.slos for q in slo.queries)
    effective: dict[str, tuple[str, float | None]] = {}
    silent = 0
    for query in order:
        effective[query] = both[query] if silent < 2 else ("unreachable", None)
        silent = silent + 1 if effective[query][0] in OUTAGES else 0
    return effective, all(answer[0] in OUTAGES for answer in effective.values())


def _history_allows_promotion(flags: Mapping[str, str | None]) -> bool:
    """The keys only promotions need parse (or are absent), and dwell (15 min after the last
    change) and cooldown (1 h after the last rollback) have passed, by the generated times."""
    audience, last_percent = flags["internal_only"], flags["last_percent"]
    if audience is not None and parse_bool_value(audience) is None:
        return False
    if last_percent is not None and parse_percent_value(last_percent) is None:
        return False
    waits = {"last_change_time": timedelta(minutes=15), "last_rollback_time": timedelta(hours=1)}
    for field, wait in waits.items():
        raw = flags[field]
        if raw is not None and (raw not in TIMES or NOW - _parsed(raw) < wait):
            return False
    return True


def _parsed(time_text: str) -> datetime:
    return datetime.fromisoformat(time_text.replace("Z", "+00:00"))


def _percent(raw: str | None) -> float | None:
    return None if raw is None else parse_percent_value(raw)


def _bool(raw: str | None, default: bool) -> bool | None:
    return default if raw is None else parse_bool_value(raw)


# --- the invariants -------------------------------------------------------------------------


def check_invariants(case: Case, seen: Observed) -> None:
    spec, flags, outcome = case.spec, case.flags, seen.outcome
    percent_key = flag_key(FEATURE, "rollout_percent")
    answers, outage = effective_answers(spec, case.answers)
    truths = [slo_truth(slo, answers) for slo in spec.slos]
    expected_after = dict(seen.before)
    if case.race is not None and seen.raced:
        expected_after[flag_key(FEATURE, case.race.field)] = case.race.value
    changed = {k for k in seen.after if seen.after[k] != expected_after.get(k)}
    written = {k for k in changed if k.startswith(f"flags:{FEATURE}:")}
    appended = seen.entries_after[len(seen.entries_before) :]
    assert seen.entries_after[: len(seen.entries_before)] == seen.entries_before
    new_entries = [(i, entry) for i, entry in appended if entry["feature"] == FEATURE]
    _check_the_other_feature(case, seen, changed - written, appended, outage, answers)
    decision = outcome.decision
    old_percent = _percent(flags["rollout_percent"])
    new_raw = seen.after[percent_key]
    enabled, paused = _bool(flags["enabled"], True), _bool(flags["paused"], False)
    readable = flags["rollout_percent"] is not None and None not in (old_percent, enabled, paused)

    _note(f"path: {_path(case, seen, outage, readable)}")
    # the pass never writes anything but the feature's percent and its history
    history = {"rollout_percent", "last_change_time", "last_percent", "last_rollback_time"}
    assert written <= {flag_key(FEATURE, field) for field in history}, written

    # I3: a dry run writes no flag key; an unchanged recommendation is appended only once
    if case.dry_run:
        assert not written, f"dry run wrote {sorted(written)}"
        others_again = [entry for _, entry in seen.appended_again if entry["feature"] == OTHER]
        assert not others_again, others_again
        if case.race is None:
            assert not seen.appended_again, seen.appended_again

    # I4: every flag write has exactly one audit entry, with the old and new percents it
    # wrote; a conflict (or a hold) writes nothing
    if written:
        assert len(new_entries) == 1, new_entries
        entry_id, entry = new_entries[0]
        assert entry["feature"] == FEATURE and entry["dry_run"] == "false"
        assert entry["old_percent"] == flags["rollout_percent"]
        assert entry["new_percent"] == new_raw
        assert seen.last_write == f"{entry['write_id']} {entry_id}"
        assert outcome.audit_id == entry_id
    elif not case.dry_run:
        assert not new_entries, new_entries
    else:
        assert len(new_entries) <= 1
        for _, entry in new_entries:
            assert entry["dry_run"] == "true" and entry["old_percent"] == flags["rollout_percent"]
    if case.race is not None:
        assert not written and (case.dry_run or not new_entries), "wrote over a concurrent change"

    # nothing answered: the pass fails and writes nothing
    if outage:
        assert outcome.status is OutcomeStatus.PROM_UNREACHABLE and not written
        return
    if not readable:
        # a key a rollback needs does not parse, or the feature is not initialised: it holds
        assert not written
        if flags["rollout_percent"] is not None:
            assert outcome.status is OutcomeStatus.CONFIG_ERROR and decision is None
        return
    assert decision is not None, outcome
    assert old_percent is not None

    # I1: no promotion unless every SLO is healthy with evidence and one counted traffic
    after_percent = _percent(new_raw)
    raised = percent_key in written and after_percent is not None and after_percent > old_percent
    recommended = case.dry_run and decision.action is Action.PROMOTE
    promoted = raised or recommended or outcome.result is Action.PROMOTE
    if promoted:
        assert all(truth.healthy for truth in truths), (truths, decision.reason)
        opted = spec.promote_without_traffic and WITHOUT_TRAFFIC in decision.reason
        assert any(truth.counted for truth in truths) or opted, decision.reason
        assert enabled and not paused and case.race is None

    # and the converse, so that I1 cannot hold by never promoting: every SLO healthy with
    # evidence, traffic counted, nothing that holds promotions, and no one else writing
    if (
        all(truth.healthy for truth in truths)
        and any(truth.counted for truth in truths)
        and enabled
        and not paused
        and case.race is None
        and old_percent < 100
        and _history_allows_promotion(flags)
    ):
        _note("a promotion is due")
        step = next(float(step) for step in spec.ladder if step > old_percent)
        assert decision.action is Action.PROMOTE and decision.to_percent == step, decision
        if not case.dry_run:
            assert after_percent == step, (new_raw, decision.reason)

    # I2: a breach with evidence ends at the safe step unless paused or disabled (or a
    # concurrent change intervened: then nothing is written, checked above). The hard kill
    # is not an exemption: the controller cannot see it, and rolling back is always safe.
    if any(truth.breached for truth in truths) and enabled and not paused and old_percent > 0:
        _note("a rollback is due")
        safe = SAFE_PERCENT if old_percent > SAFE_PERCENT else 0.0
        if case.race is None:
            assert decision.action is Action.ROLLBACK, decision.reason
            assert decision.to_percent == safe, decision
            if not case.dry_run:
                assert after_percent == safe, (new_raw, decision.reason)
        else:
            assert decision.action in (Action.ROLLBACK, Action.HOLD)

    # I5: what the pass reports equals what Redis holds afterwards. A hold sends no write, so
    # it cannot see a change made after its read: it reports what it read. A change it tried
    # to write (applied or a conflict) learns what Redis holds from the script.
    held = _percent(new_raw)  # None: absent or unparsable
    tried = decision.is_change or decision.guard == "concurrent change"
    reported = held if case.race is None or tried else old_percent
    assert outcome.percent == reported, (outcome.percent, new_raw, decision.reason)
    if case.race is None:
        assert held is not None, new_raw  # the pass writes only percents the gate parses
        moved = held != old_percent
        expected = Action.HOLD if not moved else decision.action
        assert outcome.result is expected, (outcome.result, decision.reason)
        assert not moved or (held > old_percent) == (expected is Action.PROMOTE)


def _note(text: str) -> None:
    """A statistic for `--hypothesis-show-statistics` (nothing outside a Hypothesis test)."""
    if currently_in_test_context():
        event(text)


def _path(case: Case, seen: Observed, outage: bool, readable: bool) -> str:
    """Which way the pass went, for `--hypothesis-show-statistics`: proof the cases reach
    every branch the invariants speak about."""
    if outage:
        return "Prometheus unreachable"
    if not readable:
        return "a key a rollback needs is unreadable or absent"
    decision = seen.outcome.decision
    assert decision is not None
    mode = "dry run" if case.dry_run else "live"
    guard = f" held by {decision.guard}" if decision.guard else ""
    return f"{mode} {decision.proposed or decision.action}{guard}"
