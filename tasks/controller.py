"""The controller's Prefect tasks: one kind of I/O each, so retries mean something.

Every task takes all features at once (a run costs O(1) round trips, not O(features)) and uses
NO_CACHE: a cached SLO reading would be a stale reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.tasks import Task, exponential_backoff

from rollout_core import controller
from rollout_core.abort import Alert, abort_proposals
from rollout_core.audit import append_rollout_log
from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome
from rollout_core.errors import MetricsUnavailable, RolloutError
from rollout_core.model import Action, Decision, FlagState, SloSnapshot
from rollout_core.ports import FlagStore, MetricsSource, TelemetrySink

__all__ = [
    "DECISIONS_ARTIFACT_KEY",
    "FEATURE_EVENT_PREFIX",
    "FETCH_TIMEOUT_SECONDS",
    "add_alert_verdict",
    "announce_changes",
    "apply_flag",
    "check_guards",
    "emit_metrics",
    "evaluate_policy",
    "feature_event",
    "fetch_slos",
    "fetch_slos_with_backoff",
    "read_abort_episode",
    "read_flags",
    "write_audit",
]

DECISIONS_ARTIFACT_KEY = "rollout-decisions"
FEATURE_EVENT_PREFIX = "rollout.feature."  # + rolled-back, promoted, recommended
_EVENT_BY_ACTION = {Action.ROLLBACK: "rolled-back", Action.PROMOTE: "promoted"}


def _only_metrics_unavailable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an unreachable Prometheus; a rejected query or a bug will not heal by retrying."""
    try:
        state.result()
    except MetricsUnavailable:
        return True
    except Exception:
        return False
    return False


# backstops: each query has its own total deadline (PrometheusSource), but nothing may hold
# a run past the next scheduled one, which the deployment's CANCEL_NEW limit would cancel
FETCH_TIMEOUT_SECONDS = 120  # every try of fetch_slos fits in the run: 4 x 120 s < 540 s


@task(
    cache_policy=NO_CACHE,
    timeout_seconds=FETCH_TIMEOUT_SECONDS,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=0.5),
    retry_condition_fn=_only_metrics_unavailable,
)
def fetch_slos(
    source: MetricsSource, specs: Sequence[FeatureSpec], at: datetime
) -> Mapping[str, SloSnapshot | RolloutError]:
    """Every feature's SLO readings; raises MetricsUnavailable once the retries are spent."""
    return controller.fetch_snapshots(source, specs, at)


def fetch_slos_with_backoff(backoff_seconds: float) -> Task[..., Any]:
    """fetch_slos whose retries wait backoff, 2x, 4x (ROLLOUT_FETCH_BACKOFF_SECONDS, default
    0.5 s): a decorator's delays are fixed at import, so the flow picks them per run."""
    return fetch_slos.with_options(
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff_seconds)
    )


@task(cache_policy=NO_CACHE)
def read_flags(store: FlagStore, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
    """All features' flag keys in one round trip."""
    return controller.read_states(store, features)


@task(cache_policy=NO_CACHE)
def evaluate_policy(
    specs: Sequence[FeatureSpec],
    snapshots: Mapping[str, SloSnapshot | RolloutError],
    states: Mapping[str, FlagState | RolloutError],
) -> dict[str, Decision | FeatureOutcome]:
    """What the SLO evidence asks for, per feature (pure)."""
    return controller.evaluate_all(specs, snapshots, states)


@task(cache_policy=NO_CACHE)
def read_abort_episode(store: FlagStore, episode: str) -> bool:
    """Whether this alert episode already aborted its feature (the script checks it again)."""
    return store.is_episode_handled(episode)


@task(cache_policy=NO_CACHE)
def add_alert_verdict(
    specs: Sequence[FeatureSpec],
    proposals: Mapping[str, Decision | FeatureOutcome],
    states: Mapping[str, FlagState | RolloutError],
    alert: Alert,
    handled: Sequence[str],
) -> dict[str, Decision | FeatureOutcome]:
    """The fast abort: the firing alert is a breach verdict beside the SLOs' (pure)."""
    return abort_proposals(specs, proposals, states, alert, handled)


@task(cache_policy=NO_CACHE)
def check_guards(
    specs: Sequence[FeatureSpec],
    states: Mapping[str, FlagState | RolloutError],
    proposals: Mapping[str, Decision | FeatureOutcome],
    now: datetime,
    snapshots: Mapping[str, SloSnapshot | RolloutError] | None = None,
) -> dict[str, Decision | FeatureOutcome]:
    """Pause, dwell, cooldown and freeze applied to the proposals (pure); a change's inputs
    record the readings of `snapshots` as read."""
    return controller.check_all_guards(specs, states, proposals, now, snapshots)


@task(cache_policy=NO_CACHE)  # no retries: a compare-and-set either happened or it did not
def apply_flag(
    store: FlagStore,
    decisions: Mapping[str, Decision | FeatureOutcome],
    states: Mapping[str, FlagState | RolloutError],
    now: datetime,
    dry_run: bool,
    episodes: Mapping[str, str] | None = None,
) -> dict[str, FeatureOutcome]:
    """One compare-and-set per change; a conflict holds as "concurrent change"."""
    return controller.apply_decisions(store, decisions, states, now, dry_run, episodes=episodes)


@task(cache_policy=NO_CACHE)
def emit_metrics(
    telemetry: TelemetrySink,
    outcomes: Mapping[str, FeatureOutcome],
    status: str,
    at: datetime,
    scheduled: bool = True,
) -> str | None:
    """Counts and percents to the Pushgateway; a failure there is a warning, never an error.

    A failed feature counts only in runs_total{status}, not as a hold, unless its change was
    applied anyway (a rollback despite another SLO's bad query): that counts as what it did.
    `scheduled=False` (a run the schedule did not create: a fast abort, `rollout run`, a
    manual deployment run): counted, but the last success does not move.
    Returns a warning for the run's message, or None when the push went through."""
    results = {
        name: outcome.result
        for name, outcome in outcomes.items()
        if not outcome.is_failed or outcome.applied
    }
    percents = {
        name: outcome.percent for name, outcome in outcomes.items() if outcome.percent is not None
    }
    unconfirmed = sorted(name for name, outcome in outcomes.items() if outcome.unconfirmed)
    # each keyword only when it says something: a sink without it (a fake) still works
    extra: dict[str, Any] = {}
    if unconfirmed:
        extra["unconfirmed"] = unconfirmed
    if not scheduled:
        extra["scheduled"] = False
    try:
        pushed = telemetry.record_run(results, percents, status, at, **extra)
    except Exception as exc:  # the sink promises not to raise; a decision never depends on it
        pushed = f"telemetry not recorded: {exc}"
    if pushed is None or pushed.startswith("pushed"):
        return None
    get_run_logger().warning("telemetry: %s", pushed)
    return pushed


@task(cache_policy=NO_CACHE)
def write_audit(
    outcomes: Mapping[str, FeatureOutcome], at: datetime, log_path: str | None = None
) -> str | None:
    """The Markdown log lines and the Prefect artifacts: the human-readable copy of the Redis
    stream entries, which were written atomically with the changes. A copy that fails is a
    warning (returned for the run's message), never a failed run: the stream is the record."""
    problems = []
    for outcome in _reported_changes(outcomes):
        decision = outcome.decision
        assert decision is not None
        try:
            append_rollout_log(
                outcome.feature,
                decision.from_percent,
                decision.to_percent,
                decision.reason,
                by="controller",
                dry_run=outcome.dry_run,
                at=at,
                path=log_path,
            )
        except OSError as exc:
            problems.append(f"{outcome.feature}: Markdown log {exc}")
        problems.extend(
            _copy_problem(
                f"{outcome.feature}: artifact",
                lambda o=outcome, d=decision: create_markdown_artifact(
                    markdown=_change_markdown(o, at),
                    key=f"rollout-{_artifact_slug(o.feature)}",
                    description=f"{o.feature}: {d.action} {d.from_percent:g}% -> {d.to_percent:g}%",
                ),
            )
        )
    problems.extend(
        _copy_problem(
            "decision table artifact",
            lambda: create_table_artifact(
                table=controller.decision_rows(outcomes),
                key=DECISIONS_ARTIFACT_KEY,
                description=f"Rollout decisions at {at.isoformat()}",
            ),
        )
    )
    if not problems:
        return None
    warning = (
        f"incomplete ({'; '.join(problems[:5])}"
        + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        + "); the Redis stream holds every entry: `rollout audit --rebuild-log` rewrites the log"
    )
    get_run_logger().warning("audit copy: %s", warning)
    return warning


@task(cache_policy=NO_CACHE)
def announce_changes(outcomes: Mapping[str, FeatureOutcome]) -> str | None:
    """A Prefect event per applied change and per recommendation, which `rollout notify`'s
    automations turn into notifications. Returns a warning when an event was not sent."""
    from prefect.events import emit_event

    unsent = []
    for outcome in _reported_changes(outcomes):
        event = feature_event(outcome)
        try:
            sent = emit_event(**event)
        except Exception as exc:  # an event is a courtesy; the change is already recorded
            get_run_logger().warning("event %s not sent: %s", event["event"], exc)
            sent = None
        if sent is None:
            unsent.append(outcome.feature)
    if not unsent:
        return None
    return f"not sent for {len(unsent)} feature(s): {', '.join(unsent[:10])}"


def feature_event(outcome: FeatureOutcome) -> dict[str, Any]:
    """The event for a changed feature: `rollout.feature.rolled-back`, `.promoted` or
    `.recommended`, about the resource `rollout.feature.<name>`."""
    d = outcome.decision
    assert d is not None
    name = "recommended" if outcome.dry_run else _EVENT_BY_ACTION.get(d.action, str(d.action))
    return {
        "event": f"{FEATURE_EVENT_PREFIX}{name}",
        "resource": {
            "prefect.resource.id": f"{FEATURE_EVENT_PREFIX.rstrip('.')}.{outcome.feature}",
            "prefect.resource.name": outcome.feature,
            "prefect.resource.role": "feature",
        },
        "payload": {
            "feature": outcome.feature,
            "action": str(d.action),
            "from_percent": d.from_percent,
            "to_percent": d.to_percent,
            "reason": d.reason,
            "guard": d.guard,
            "dry_run": outcome.dry_run,
            "applied": outcome.applied,
            "audit_id": outcome.audit_id,
        },
    }


def _reported_changes(outcomes: Mapping[str, FeatureOutcome]) -> list[FeatureOutcome]:
    """Applied changes and dry-run recommendations: what the log, artifacts and events tell.
    An unchanged recommendation (no audit id: the stream did not append it again) is not told
    again either."""
    return [
        o
        for o in outcomes.values()
        if o.decision is not None
        and o.decision.is_change
        and (o.applied or (o.dry_run and o.audit_id is not None))
    ]


def _copy_problem(what: str, write: Callable[[], Any]) -> list[str]:
    try:
        write()
    except Exception as exc:  # the Prefect API or its artifact validation
        return [f"{what} {type(exc).__name__}: {exc}"]
    return []


def _change_markdown(outcome: FeatureOutcome, at: datetime) -> str:
    assert outcome.decision is not None
    d = outcome.decision
    mode = "Recommendation (dry run, nothing written)" if outcome.dry_run else "Applied"
    evidence = "\n".join(f"| {v.name} | {v} |" for v in d.verdicts) or "| - | no SLOs |"
    return (
        f"# {outcome.feature}: {d.action} {d.from_percent:g}% → {d.to_percent:g}%\n\n"
        f"**{mode}** at {at.isoformat()}\n\n**Reason:** {d.reason}\n\n"
        f"| SLO | evidence |\n|---|---|\n{evidence}\n"
    )


def _artifact_slug(feature: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", feature.lower()).strip("-") or "feature"
