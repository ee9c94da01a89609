"""Backtests: the controller's own pure pass replayed tick by tick over recorded SLO history.

Each tick runs exactly what the flow runs (`controller.evaluate_all` then
`controller.check_all_guards`, with the simulated clock as `now`) against a simulated flag
state that every change updates the way the compare-and-set does (percent, last percent,
last change time, last rollback time). Nothing here reads a clock, Redis or HTTP.
A segmented feature is replayed as the flow runs it: each segment (`google[eu-west]`) is a
unit with its own readings and flag state, all in the same pass, so the segment order holds
promotions as it does live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome, check_all_guards, evaluate_all
from rollout_core.decision_inputs import decision_inputs
from rollout_core.errors import ConfigError, MetricsUnavailable, RolloutError
from rollout_core.guards import format_duration
from rollout_core.model import Action, Decision, FlagState, SloSnapshot, Verdict
from rollout_core.ports import MetricsSource

__all__ = [
    "MAX_TICKS",
    "BacktestResult",
    "BacktestSummary",
    "Change",
    "Tick",
    "backtest",
    "combined_json",
    "hold_cause",
    "tick_count",
    "ticks_between",
]


@dataclass(frozen=True)
class Change:
    """One simulated flag change, as `backtest --json` lists it."""

    time: datetime
    action: str
    from_percent: float
    to_percent: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "action": self.action,
            "from_percent": self.from_percent,
            "to_percent": self.to_percent,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Tick:
    """One simulated pass for one feature: the percent after it and what decided it."""

    at: datetime
    percent: float
    action: str  # promote | rollback | hold | failed
    reason: str
    breached: bool  # some SLO read as a breach at this tick
    no_data: bool  # some SLO had no reading (no series, NaN, a query error, an outage)
    hold_cause: str | None = None
    inputs: str = ""  # the decision's inputs (record_inputs=True), as an audit entry keeps them


@dataclass(frozen=True)
class BacktestSummary:
    """What a config would have done over the range; `exposure` is the percent-weighted time
    spent live with a breached SLO, in percent-hours (50% for 2 h = 100)."""

    promotions: int
    rollbacks: int
    holds: Mapping[str, int]
    no_data_ticks: int
    time_to_full: timedelta | None
    exposure: float
    ticks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "promotions": self.promotions,
            "rollbacks": self.rollbacks,
            "holds": sum(self.holds.values()),
            "holds_by_cause": dict(self.holds),
            "no_data_ticks": self.no_data_ticks,
            "time_to_full": (
                None if self.time_to_full is None else self.time_to_full.total_seconds()
            ),
            "breached_exposure_percent_hours": round(self.exposure, 3),
            "ticks": self.ticks,
        }


@dataclass(frozen=True)
class BacktestResult:
    feature: str
    start: datetime
    end: datetime
    step: timedelta
    changes: tuple[Change, ...]
    ticks: tuple[Tick, ...] = field(repr=False)
    summary: BacktestSummary

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "end": self.end.isoformat().replace("+00:00", "Z"),
            "step": self.step.total_seconds(),
            "changes": [change.to_json() for change in self.changes],
            "summary": self.summary.to_json(),
        }


# Ticks one backtest replays at most: 138 days at a 10-minute step, 13 days at one minute.
# Past it, the range reads (one per 10,000 ticks and query) and the per-tick record (a few
# kilobytes a tick) grow without bound, so it is refused before any request.
MAX_TICKS = 20_000


def tick_count(start: datetime, end: datetime, step: timedelta) -> int:
    """How many passes `start` .. `end` every `step` holds; ConfigError for an empty or
    backwards range, a step that is not positive, or more than MAX_TICKS passes (naming the
    step that would fit)."""
    if step <= timedelta(0):
        raise ConfigError(f"step {step} must be positive; e.g. --step 10m")
    if end <= start:
        raise ConfigError(f"--end {end.isoformat()} must be after --start {start.isoformat()}")
    count = int((end - start) / step) + 1
    if count > MAX_TICKS:
        needed = timedelta(seconds=math.ceil((end - start).total_seconds() / (MAX_TICKS - 1)))
        raise ConfigError(
            f"--start {start.isoformat()} .. --end {end.isoformat()} every --step "
            f"{format_duration(step)} is {count:,} ticks; a backtest replays at most "
            f"{MAX_TICKS:,}: use --step {format_duration(needed)} or more, or a shorter range"
        )
    return count


def ticks_between(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """`start`, `start + step`, ... up to and including `end` (UTC); refused as `tick_count`
    says."""
    return [start + i * step for i in range(tick_count(start, end, step))]


def hold_cause(decision: Decision) -> str:
    """Why a decision held, in a few words: the guard, or the policy's reason."""
    if decision.guard is not None:
        return decision.guard
    overall = max([v.verdict for v in decision.verdicts], default=Verdict.INCONCLUSIVE)
    if overall is Verdict.INCONCLUSIVE:
        return "inconclusive"
    if overall is Verdict.BREACH:
        return "breach at 0%"
    if decision.from_percent >= 100:
        return "full rollout"
    return "no traffic evidence"


def _initial_state(spec: FeatureSpec, percent: float) -> FlagState:
    return FlagState(spec.name, percent=percent)


def _after(state: FlagState, decision: Decision, at: datetime) -> FlagState:
    """The state the compare-and-set leaves behind an applied change."""
    if not decision.is_change:
        return state
    rollback = decision.to_percent < decision.from_percent
    return replace(
        state,
        percent=decision.to_percent,
        last_percent=decision.from_percent,
        last_change_time=at,
        last_rollback_time=at if rollback else state.last_rollback_time,
    )


def backtest(
    specs: Sequence[FeatureSpec],
    source: MetricsSource,
    start: datetime,
    end: datetime,
    step: timedelta,
    from_percent: float = 0.0,
    record_inputs: bool = False,
    workers: int = 1,
    keep_ticks: bool = True,
) -> dict[str, BacktestResult]:
    """Every feature's simulated rollout from `start` to `end`, one pass per `step`;
    `record_inputs` keeps every tick's decision inputs (holds too), for explain's checks.
    Features never influence each other's decisions, so `workers` > 1 replays groups of
    them in forked processes (each its own pass over its features), for fleet-size runs.
    `keep_ticks=False` keeps changes and summaries only (no per-tick record).
    A fleet is replayed a group of features at a time (a segmented feature's segments always
    together, in one pass per tick as the flow runs them), so each pass stays small; `source`
    is asked once per group and tick (a ReplaySource answers from memory)."""
    families = _families(specs)
    if workers > 1 and len(families) > 1:
        job = (specs, source, start, end, step, from_percent, record_inputs, keep_ticks)
        return _in_processes(job, families, workers)
    if len(specs) > _GROUP_SIZE and len(families) > 1:
        results: dict[str, BacktestResult] = {}
        for group in _groups(families, _GROUP_SIZE):
            chosen = [specs[i] for i in group]
            results.update(
                _replay(chosen, source, start, end, step, from_percent, record_inputs, keep_ticks)
            )
        return {spec.name: results[spec.name] for spec in specs}
    return _replay(specs, source, start, end, step, from_percent, record_inputs, keep_ticks)


# Units per pass of a fleet-size backtest. Every pass keeps all its units' snapshots, proposals
# and decisions alive at once; past a few dozen units the garbage collector's young generations
# promote them and full collections come often, over an ever larger heap.
_GROUP_SIZE = 32


def _families(specs: Sequence[FeatureSpec]) -> list[list[int]]:
    """The positions of the specs, grouped by feature: a segmented feature's segments (units
    with the same parent) decide in one pass, since the segment order links them."""
    families: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        families.setdefault(spec.parent or spec.name, []).append(index)
    return list(families.values())


def _groups(families: Sequence[list[int]], size: int) -> list[list[int]]:
    """Consecutive families gathered into groups of about `size` units (a family never split)."""
    groups: list[list[int]] = [[]]
    for family in families:
        if groups[-1] and len(groups[-1]) + len(family) > size:
            groups.append([])
        groups[-1].extend(family)
    return groups


def _replay(
    specs: Sequence[FeatureSpec],
    source: MetricsSource,
    start: datetime,
    end: datetime,
    step: timedelta,
    from_percent: float,
    record_inputs: bool,
    keep_ticks: bool,
) -> dict[str, BacktestResult]:
    """One pass per tick over all of `specs`, exactly as the flow runs them."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    times = ticks_between(start, end, step)
    states: dict[str, FlagState | RolloutError] = {
        spec.name: _initial_state(spec, from_percent) for spec in specs
    }
    tallies = {spec.name: _Tally(start, step, from_percent, keep_ticks) for spec in specs}
    for at in times:
        try:
            snapshots: Mapping[str, SloSnapshot | RolloutError] = source.fetch(specs, at)
        except MetricsUnavailable as error:
            snapshots = {spec.name: error for spec in specs}
        proposals = evaluate_all(specs, snapshots, states)
        decisions = check_all_guards(specs, states, proposals, at, snapshots)
        for spec in specs:
            state = states[spec.name]
            assert isinstance(state, FlagState)
            decision = decisions[spec.name]
            inputs = ""
            if record_inputs and isinstance(decision, Decision):
                snapshot = snapshots.get(spec.name)
                read = snapshot if isinstance(snapshot, SloSnapshot) else None
                inputs = decision_inputs(spec, state, decision, read)
            tallies[spec.name].add(at, decision, state, inputs)
            if isinstance(decision, Decision) and decision.is_change:
                states[spec.name] = _after(state, decision, at)
    return {spec.name: tallies[spec.name].result(spec.name, end) for spec in specs}


def _reason(decision: Decision | FeatureOutcome) -> str:
    if isinstance(decision, FeatureOutcome):
        return decision.error or str(decision.status)
    return decision.reason


class _Tally:
    """One feature's replay as it goes: its changes, holds by cause, exposure and the rest of
    the summary, and (`keep_ticks`) every tick. Reasons are formatted for changes and kept
    ticks only: a replay of a fleet would otherwise spend most of its time on holds' text."""

    def __init__(self, start: datetime, step: timedelta, from_percent: float, keep: bool):
        self.start, self.step, self.keep = start, step, keep
        self.hours = step.total_seconds() / 3600
        self.before = from_percent
        self.full_at: datetime | None = start if from_percent >= 100 else None
        self.changes: list[Change] = []
        self.holds: dict[str, int] = {}
        self.exposure = 0.0
        self.no_data = 0
        self.count = 0
        self.ticks: list[Tick] = []

    def add(
        self, at: datetime, decision: Decision | FeatureOutcome, state: FlagState, inputs: str
    ) -> None:
        percent, action, breached, no_data, cause = _observe(decision, state)
        if breached:
            self.exposure += self.before * self.hours  # live at `before` while the breach was read
        if action in _CHANGES:
            self.changes.append(Change(at, action, self.before, percent, _reason(decision)))
        elif cause is not None:
            self.holds[cause] = self.holds.get(cause, 0) + 1
        if self.full_at is None and percent >= 100:
            self.full_at = at
        self.before = percent
        self.no_data += no_data
        self.count += 1
        if self.keep:
            reason = _reason(decision)
            self.ticks.append(Tick(at, percent, action, reason, breached, no_data, cause, inputs))

    def result(self, feature: str, end: datetime) -> BacktestResult:
        changes = tuple(self.changes)
        summary = BacktestSummary(
            promotions=sum(c.action == str(Action.PROMOTE) for c in changes),
            rollbacks=sum(c.action == str(Action.ROLLBACK) for c in changes),
            holds=dict(sorted(self.holds.items(), key=lambda item: -item[1])),
            no_data_ticks=self.no_data,
            time_to_full=None if self.full_at is None else self.full_at - self.start,
            exposure=self.exposure,
            ticks=self.count,
        )
        return BacktestResult(
            feature, self.start, end, self.step, changes, tuple(self.ticks), summary
        )


_CHANGES = (str(Action.PROMOTE), str(Action.ROLLBACK))
_HOLD = str(Action.HOLD)


def _observe(
    decision: Decision | FeatureOutcome, state: FlagState
) -> tuple[float, str, bool, bool, str | None]:
    """A tick's percent after it, action, whether an SLO breached or had no data, and the
    hold's cause."""
    if isinstance(decision, FeatureOutcome):
        return state.percent, "failed", False, True, "metrics unavailable"
    breached = no_data = False
    for v in decision.verdicts:
        breached = breached or v.verdict is Verdict.BREACH
        no_data = no_data or v.error is not None or v.value is None or not math.isfinite(v.value)
    action = str(decision.action) if decision.is_change else _HOLD
    cause = hold_cause(decision) if action == _HOLD else None
    return decision.to_percent, action, breached, no_data, cause


_JOB: tuple[Any, ...] = ()  # what forked workers inherit (a source need not pickle)


def _run_group(group: Sequence[int]) -> dict[str, BacktestResult]:
    specs, source, start, end, step, from_percent, record_inputs, keep_ticks = _JOB
    chosen = [specs[i] for i in group]
    return backtest(
        chosen, source, start, end, step, from_percent, record_inputs, keep_ticks=keep_ticks
    )


def _in_processes(
    job: tuple[Any, ...], families: Sequence[list[int]], workers: int
) -> dict[str, BacktestResult]:
    import multiprocessing

    global _JOB
    _JOB = job
    groups = [[i for family in families[w::workers] for i in family] for w in range(workers)]
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_run_group, [g for g in groups if g])
    finally:
        _JOB = ()
    merged = {name: result for part in parts for name, result in part.items()}
    return {spec.name: merged[spec.name] for spec in job[0]}


def combined_json(feature: str, results: Mapping[str, BacktestResult]) -> dict[str, Any]:
    """`backtest --json` for a feature: its own result, or for a segmented feature every
    segment's changes (each with its `segment`), oldest first, the summaries added up (time to
    full: when the last segment got there), and each segment's own result under `segments`."""
    units = list(results.values())
    if len(units) == 1 and "[" not in units[0].feature:
        return units[0].to_json()
    changes = sorted(
        (
            {**change.to_json(), "segment": _segment_of(result.feature)}
            for result in units
            for change in result.changes
        ),
        key=lambda change: change["time"],
    )
    summaries = [result.summary for result in units]
    holds: dict[str, int] = {}
    for summary in summaries:
        for cause, count in summary.holds.items():
            holds[cause] = holds.get(cause, 0) + count
    fulls = [s.time_to_full for s in summaries]
    total = BacktestSummary(
        promotions=sum(s.promotions for s in summaries),
        rollbacks=sum(s.rollbacks for s in summaries),
        holds=dict(sorted(holds.items(), key=lambda item: -item[1])),
        no_data_ticks=sum(s.no_data_ticks for s in summaries),
        # the last segment's; timedelta(0) (full from the start) is falsy but a time all the same
        time_to_full=None
        if any(f is None for f in fulls)
        else max(f for f in fulls if f is not None),
        exposure=sum(s.exposure for s in summaries),
        ticks=sum(s.ticks for s in summaries),
    )
    first = units[0]
    return {
        **first.to_json(),
        "feature": feature,
        "changes": changes,
        "summary": total.to_json(),
        "segments": {_segment_of(r.feature): r.to_json() for r in units},
    }


def _segment_of(unit: str) -> str:
    return unit[unit.index("[") + 1 : -1] if "[" in unit else ""
