"""One controller pass, as steps the Prefect tasks wrap one by one.

fetch SLOs → read flags → evaluate policy → check guards → apply → (telemetry, audit).
Each step takes every feature at once, so a pass costs one query per distinct PromQL text,
one flag read, and one pipelined batch of compare-and-sets, however many features there are.
A feature that fails carries its error in its outcome; the others go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rollout_core.config import FeatureSpec, expand_segments
from rollout_core.decision_inputs import decision_inputs
from rollout_core.errors import ConfigError, FlagStoreError, MetricsUnavailable, RolloutError
from rollout_core.guards import check_guards
from rollout_core.model import Action, Decision, FlagState, SloSnapshot
from rollout_core.policy import evaluate_slos, propose
from rollout_core.ports import FlagChange, FlagStore, MetricsSource
from rollout_core.segments import order_segments

__all__ = [
    "MESSAGE_LIMIT",
    "FeatureOutcome",
    "OutcomeStatus",
    "action_label",
    "apply_decisions",
    "check_all_guards",
    "decision_rows",
    "evaluate_all",
    "failed_outcomes",
    "fetch_snapshots",
    "read_states",
    "resolve_dry_run",
    "run_pass",
    "run_status",
    "stale_run_reason",
    "summarize",
    "unconfirmed_warning",
]


class OutcomeStatus(StrEnum):
    """How a feature's pass ended; anything but OK fails the run. Ordered best to worst."""

    OK = "ok"
    CONFIG_ERROR = "config_error"
    ERROR = "error"
    PROM_UNREACHABLE = "prom_unreachable"
    REDIS_ERROR = "redis_error"


# runs_total{status} knows ok, prom_unreachable, redis_error and error.
_RUN_STATUS_ORDER = (
    OutcomeStatus.REDIS_ERROR,
    OutcomeStatus.PROM_UNREACHABLE,
    OutcomeStatus.ERROR,
    OutcomeStatus.CONFIG_ERROR,
)


@dataclass(frozen=True)
class FeatureOutcome:
    """A feature's result for one pass: its decision (when it got that far) and what happened.

    A decision made despite an SLO query that needs a configuration fix (400 bad_data, a
    result of the wrong shape) stands and is applied, but its outcome is a CONFIG_ERROR, so
    the run ends Failed and names the SLO and the query.
    """

    feature: str
    status: OutcomeStatus
    decision: Decision | None = None
    applied: bool = False
    dry_run: bool = False
    error: str | None = None
    audit_id: str | None = None
    # a compare-and-set conflict: what Redis held instead (None: absent or unparsable)
    conflict: bool = False
    current_percent: float | None = None
    # applied on the Redis master, but no replica acknowledged it (WAIT 1) in time
    unconfirmed: bool = False

    def __post_init__(self) -> None:
        if self.status is OutcomeStatus.OK and self.configuration_problems:
            object.__setattr__(self, "status", OutcomeStatus.CONFIG_ERROR)

    @property
    def configuration_problems(self) -> tuple[str, ...]:
        """The SLO queries to fix, from the decision's evidence (empty without a decision)."""
        return () if self.decision is None else self.decision.configuration_problems

    @property
    def is_failed(self) -> bool:
        return self.status is not OutcomeStatus.OK

    @property
    def result(self) -> Action:
        """The telemetry result: what actually happened to the flag (a dry run changes nothing)."""
        if self.decision is None or not self.applied or self.dry_run:
            return Action.HOLD
        return self.decision.action

    @property
    def percent(self) -> float | None:
        """The percent the flag holds after this pass, when known. After a conflict it is
        what the compare-and-set found there, not what the pass had read."""
        if self.decision is None:
            return None
        if self.conflict:
            return self.current_percent
        return (
            self.decision.to_percent
            if self.applied and not self.dry_run
            else (self.decision.from_percent)
        )

    @property
    def summary(self) -> str:
        """One line for the run's state message and the CLI."""
        if self.error is not None:
            return f"{self.feature}: {self.status} ({self.error})"
        assert self.decision is not None
        d = self.decision
        verb = f"recommend {d.action}" if self.dry_run and d.is_change else str(d.action)
        line = f"{self.feature}: {verb} {d.from_percent:g}% -> {d.to_percent:g}% ({d.reason})"
        problems = self.configuration_problems
        return f"{line}; {self.status}: {'; '.join(problems)}" if problems else line


def _status_of(error: BaseException) -> OutcomeStatus:
    if isinstance(error, MetricsUnavailable):
        return OutcomeStatus.PROM_UNREACHABLE
    if isinstance(error, ConfigError):
        return OutcomeStatus.CONFIG_ERROR
    if isinstance(error, FlagStoreError):
        return OutcomeStatus.REDIS_ERROR
    return OutcomeStatus.ERROR


def failed_outcomes(features: Sequence[str], error: BaseException) -> dict[str, FeatureOutcome]:
    """Every feature failed for one reason (Prometheus or Redis down): nothing was changed."""
    status = _status_of(error)
    return {name: FeatureOutcome(name, status, error=str(error)) for name in features}


def fetch_snapshots(
    source: MetricsSource, specs: Sequence[FeatureSpec], at: datetime
) -> Mapping[str, SloSnapshot | RolloutError]:
    """SLO readings of every feature; raises MetricsUnavailable when the source cannot answer."""
    return source.fetch(specs, at)


def read_states(store: FlagStore, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
    """Every feature's flag state in one round trip; raises FlagStoreError when Redis fails."""
    return store.read_each(features)


def evaluate_all(
    specs: Sequence[FeatureSpec],
    snapshots: Mapping[str, SloSnapshot | RolloutError],
    states: Mapping[str, FlagState | RolloutError],
) -> dict[str, Decision | FeatureOutcome]:
    """The policy's proposal per feature, or the outcome of a feature that cannot be judged."""
    proposals: dict[str, Decision | FeatureOutcome] = {}
    for spec in specs:
        snapshot = snapshots.get(spec.name)
        state = states.get(spec.name)
        problem = state if isinstance(state, BaseException) else snapshot
        if isinstance(problem, BaseException):
            proposals[spec.name] = FeatureOutcome(
                spec.name, _status_of(problem), error=str(problem)
            )
            continue
        if snapshot is None:
            snapshot = SloSnapshot(spec.name, {})
        assert isinstance(state, FlagState) and isinstance(snapshot, SloSnapshot)
        proposals[spec.name] = propose(spec, state, evaluate_slos(spec, snapshot))
    return proposals


def check_all_guards(
    specs: Sequence[FeatureSpec],
    states: Mapping[str, FlagState | RolloutError],
    proposals: Mapping[str, Decision | FeatureOutcome],
    now: datetime,
    snapshots: Mapping[str, SloSnapshot | RolloutError] | None = None,
) -> dict[str, Decision | FeatureOutcome]:
    """Guards applied to every proposal; failed features pass through unchanged. A change's
    inputs record the `snapshots` readings as read (an absent series stays absent)."""
    decisions: dict[str, Decision | FeatureOutcome] = {}
    for spec in specs:
        proposal = proposals[spec.name]
        state = states.get(spec.name)
        if isinstance(proposal, Decision) and isinstance(state, FlagState):
            decision = check_guards(spec, state, proposal, now)
            if decision.is_change:  # audited: its entry records what it was decided from
                snapshot = (snapshots or {}).get(spec.name)
                read = snapshot if isinstance(snapshot, SloSnapshot) else None
                decision = replace(decision, inputs=decision_inputs(spec, state, decision, read))
            decisions[spec.name] = decision
        else:
            decisions[spec.name] = proposal
    if any(spec.parent is not None for spec in specs):  # segments: promotions follow the order
        return order_segments(specs, states, decisions)
    return decisions


def apply_decisions(
    store: FlagStore,
    decisions: Mapping[str, Decision | FeatureOutcome],
    states: Mapping[str, FlagState | RolloutError],
    now: datetime,
    dry_run: bool,
    by: str = "controller",
    episodes: Mapping[str, str] | None = None,
) -> dict[str, FeatureOutcome]:
    """Every change's compare-and-set, sent together in one round trip. A conflict (any key
    the decision read changed since) becomes a hold "concurrent change"; a Redis failure
    fails that feature only. Never retried blindly: a lost reply is read back by write id,
    and a change whose outcome stays unknown fails the feature, saying so. `episodes`: the
    alert episode a fast abort acts on, per feature (recorded atomically with the write)."""
    outcomes: dict[str, FeatureOutcome] = {}
    changes: dict[str, tuple[Decision, FlagChange]] = {}
    for name, decision in decisions.items():
        state = states.get(name)
        if isinstance(decision, FeatureOutcome):
            outcomes[name] = decision
        elif not decision.is_change or not isinstance(state, FlagState):
            outcomes[name] = FeatureOutcome(name, OutcomeStatus.OK, decision, dry_run=dry_run)
        else:
            change = _change_for(name, decision, state, now, dry_run, by)
            episode = (episodes or {}).get(name)
            changes[name] = decision, replace(change, episode=episode) if episode else change
    if dry_run:
        _forget_recommendations(store, decisions, states)
    try:
        results = store.apply_many([change for _, change in changes.values()])
    except RolloutError as error:
        results = [error] * len(changes)
    for (name, (decision, _)), result in zip(changes.items(), results, strict=True):
        if isinstance(result, RolloutError):
            outcomes[name] = FeatureOutcome(name, _status_of(result), decision, error=str(result))
        elif result.unknown:
            status = OutcomeStatus.REDIS_ERROR
            outcomes[name] = FeatureOutcome(name, status, decision, error=result.message)
        elif result.conflict:
            held = _held_by_concurrent_change(decision, result.current_percent, result.message)
            outcomes[name] = FeatureOutcome(
                name,
                OutcomeStatus.OK,
                held,
                dry_run=dry_run,
                conflict=True,
                current_percent=result.current_percent,
            )
        else:
            outcomes[name] = FeatureOutcome(
                name,
                OutcomeStatus.OK,
                decision,
                result.applied,
                dry_run,
                audit_id=result.audit_id,
                unconfirmed=result.unconfirmed,
            )
    return {name: outcomes[name] for name in decisions}


def _forget_recommendations(
    store: FlagStore,
    decisions: Mapping[str, Decision | FeatureOutcome],
    states: Mapping[str, FlagState | RolloutError],
) -> None:
    """A dry-run hold ends a run of repeated recommendations: the same recommendation after
    it is a new incident and is recorded again. Best effort: when Redis fails here, the
    changes below fail too and say so; at worst one repeat goes unrecorded."""
    held = [
        name
        for name, decision in decisions.items()
        if isinstance(decision, Decision)
        and not decision.is_change
        and isinstance(states.get(name), FlagState)
    ]
    with contextlib.suppress(RolloutError):
        store.forget_recommendations(held)


def _change_for(
    name: str, decision: Decision, state: FlagState, now: datetime, dry_run: bool, by: str
) -> FlagChange:
    return FlagChange(
        feature=name,
        expected_percent=state.percent if state.exists else None,
        expected_paused=state.paused,
        new_percent=decision.to_percent,
        reason=decision.reason,
        by=by,
        at=now,
        action=decision.action,
        dry_run=dry_run,
        expected_raw=state.raw,  # every key the decision read, compared exactly
        inputs=decision.inputs,
    )


def _held_by_concurrent_change(
    decision: Decision, current: float | None, detail: str = ""
) -> Decision:
    now_at = f"{current:g}%" if current is not None else "absent or unparsable"
    what = f" ({detail})" if detail else ""
    return replace(
        decision,
        action=Action.HOLD,
        to_percent=decision.from_percent,
        proposed=decision.proposed or decision.action,
        proposed_percent=decision.to_percent,
        guard="concurrent change",
        reasons=(
            f"Hold: concurrent change: flag moved from {decision.from_percent:g}% to {now_at} "
            f"since it was read{what}; not overwritten",
            *decision.reasons,
        ),
    )


def decision_rows(outcomes: Mapping[str, FeatureOutcome]) -> list[dict[str, Any]]:
    """One row per feature: percent before and after, action, reason, SLO evidence, guard."""
    rows = []
    for outcome in outcomes.values():
        d = outcome.decision
        rows.append(
            {
                "feature": outcome.feature,
                "status": str(outcome.status),
                "before": None if d is None else f"{d.from_percent:g}%",
                "after": None if outcome.percent is None else f"{outcome.percent:g}%",
                "action": action_label(outcome),
                "reason": outcome.error if d is None else d.reason,
                "slos": "" if d is None else "; ".join(str(v) for v in d.verdicts),
                "guard": None if d is None else d.guard,
            }
        )
    return rows


def action_label(outcome: FeatureOutcome) -> str:
    """What happened, as people read it: "failed", "hold", or "recommend promote" in a dry run."""
    if outcome.decision is None:
        return "failed"
    action = str(outcome.decision.action)
    return f"recommend {action}" if outcome.dry_run and outcome.decision.is_change else action


def run_status(outcomes: Mapping[str, FeatureOutcome]) -> str:
    """The run's status for runs_total{status}: ok, or the worst failure among the features."""
    statuses = {outcome.status for outcome in outcomes.values()}
    for status in _RUN_STATUS_ORDER:
        if status in statuses:
            return "error" if status is OutcomeStatus.CONFIG_ERROR else str(status)
    return str(OutcomeStatus.OK)


MESSAGE_LIMIT = 2000  # characters: what a chat notification carries comfortably
_LINE_LIMIT = 300


def summarize(outcomes: Mapping[str, FeatureOutcome], limit: int = MESSAGE_LIMIT) -> str:
    """The run's state message, which notifications send: counts by result, then the failed
    and the changed features and the holds only an operator can end (a corrupt key, a write
    Redis lost: the `history` guard), one line each, cut at about `limit` characters with
    "... and N more". The full table is the `rollout-decisions` artifact."""
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        label = action_label(outcome)
        counts[label] = counts.get(label, 0) + 1
    head = f"{len(outcomes)} feature(s): " + (
        ", ".join(f"{n} {label}" for label, n in sorted(counts.items(), key=_count_order)) or "none"
    )
    failed = [o for o in outcomes.values() if o.is_failed]
    changed = [o for o in outcomes.values() if _is_reported_change(o) or _needs_operator(o)]
    lines = [_cut(o.summary) for o in (*failed, *changed)]
    kept = [head]
    size = len(head)
    for index, line in enumerate(lines):
        rest = len(lines) - index
        tail = f"... and {rest} more (every feature is in the rollout-decisions artifact)"
        if size + 1 + len(line) + (1 + len(tail) if rest > 1 else 0) > limit:
            kept.append(tail)
            break
        kept.append(line)
        size += 1 + len(line)
    return "\n".join(kept)


_LABEL_ORDER = ("failed", "rollback", "recommend rollback", "promote", "recommend promote", "hold")


def _count_order(item: tuple[str, int]) -> tuple[int, str]:
    label = item[0]
    return (_LABEL_ORDER.index(label) if label in _LABEL_ORDER else len(_LABEL_ORDER), label)


def _is_reported_change(outcome: FeatureOutcome) -> bool:
    """An applied change, or a dry run's recommendation of one."""
    d = outcome.decision
    return d is not None and d.is_change and (outcome.applied or outcome.dry_run)


def _needs_operator(outcome: FeatureOutcome) -> bool:
    """A promotion held until an operator acts (the `history` guard), listed like a change."""
    return outcome.decision is not None and outcome.decision.guard == "history"


def _cut(line: str) -> str:
    return line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 1] + "…"


def unconfirmed_warning(outcomes: Mapping[str, FeatureOutcome]) -> str | None:
    """The run's warning for changes applied on the master that no replica acknowledged."""
    names = sorted(name for name, outcome in outcomes.items() if outcome.unconfirmed)
    if not names:
        return None
    return (
        f"applied but unconfirmed: no Redis replica acknowledged the change of "
        f"{', '.join(names)} in time (WAIT 1); a failover now could lose it, and the next run "
        "then holds that feature"
    )


def resolve_dry_run(requested: bool | None, from_env: bool | None) -> bool:
    """The parameter wins, then ROLLOUT_DRY_RUN; with neither, a dry run: live is deliberate."""
    if requested is not None:
        return requested
    return True if from_env is None else from_env


def stale_run_reason(
    scheduled: datetime | None, started: datetime, interval: timedelta, max_intervals: int = 2
) -> str | None:
    """Why a scheduled run that starts too late must not act, or None when it is on time.

    A worker that comes back replays missed runs oldest first; acting on each would replay
    hours-old decisions in a burst, so late runs complete as skipped and the next one decides.
    """
    if scheduled is None:
        return None
    late = timedelta(seconds=round((started - scheduled).total_seconds()))
    if late <= interval * max_intervals:
        return None
    return (
        f"skipped: scheduled at {scheduled.isoformat(timespec='seconds')} but started {late} "
        f"late (more than {max_intervals} x {interval}); the next on-time run decides"
    )


def run_pass(
    specs: Sequence[FeatureSpec],
    store: FlagStore,
    source: MetricsSource,
    now: datetime,
    dry_run: bool,
) -> dict[str, FeatureOutcome]:
    """The whole decision pass without Prefect: what the benchmark and the demo's checks use."""
    specs = expand_segments(list(specs))
    names = [spec.name for spec in specs]
    try:
        snapshots = fetch_snapshots(source, specs, now)
    except MetricsUnavailable as error:
        return failed_outcomes(names, error)
    try:
        states = read_states(store, names)
    except FlagStoreError as error:
        return failed_outcomes(names, error)
    proposals = evaluate_all(specs, snapshots, states)
    decisions = check_all_guards(specs, states, proposals, now, snapshots)
    return apply_decisions(store, decisions, states, now, dry_run)
