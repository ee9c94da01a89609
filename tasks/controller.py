"""The controller's Prefect tasks: one kind of I/O each, so retries mean something.

Every task takes all features at once (a run costs O(1) round trips, not O(features)) and uses
NO_CACHE: a cached SLO reading would be a stale reading.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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
from rollout_core.audit import append_rollout_log
from rollout_core.config import FeatureSpec
from rollout_core.controller import FeatureOutcome
from rollout_core.errors import MetricsUnavailable, RolloutError
from rollout_core.model import Decision, FlagState, SloSnapshot
from rollout_core.ports import FlagStore, MetricsSource, TelemetrySink

__all__ = [
    "DECISIONS_ARTIFACT_KEY",
    "apply_flag",
    "check_guards",
    "emit_metrics",
    "evaluate_policy",
    "fetch_slos",
    "fetch_slos_with_backoff",
    "read_flags",
    "write_audit",
]

DECISIONS_ARTIFACT_KEY = "rollout-decisions"


def _only_metrics_unavailable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry an unreachable Prometheus; a rejected query or a bug will not heal by retrying."""
    try:
        state.result()
    except MetricsUnavailable:
        return True
    except Exception:
        return False
    return False


@task(
    cache_policy=NO_CACHE,
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
def check_guards(
    specs: Sequence[FeatureSpec],
    states: Mapping[str, FlagState | RolloutError],
    proposals: Mapping[str, Decision | FeatureOutcome],
    now: datetime,
) -> dict[str, Decision | FeatureOutcome]:
    """Pause, dwell, cooldown and freeze applied to the proposals (pure)."""
    return controller.check_all_guards(specs, states, proposals, now)


@task(cache_policy=NO_CACHE)  # no retries: a compare-and-set either happened or it did not
def apply_flag(
    store: FlagStore,
    decisions: Mapping[str, Decision | FeatureOutcome],
    states: Mapping[str, FlagState | RolloutError],
    now: datetime,
    dry_run: bool,
) -> dict[str, FeatureOutcome]:
    """One compare-and-set per change; a conflict holds as "concurrent change"."""
    return controller.apply_decisions(store, decisions, states, now, dry_run)


@task(cache_policy=NO_CACHE)
def emit_metrics(
    telemetry: TelemetrySink, outcomes: Mapping[str, FeatureOutcome], status: str, at: datetime
) -> str | None:
    """Counts and percents to the Pushgateway; a failure there is a warning, never an error.

    A failed feature made no decision, so it counts only in runs_total{status}, not as a hold.
    Returns a warning for the run's message, or None when the push went through."""
    results = {name: outcome.result for name, outcome in outcomes.items() if not outcome.is_failed}
    percents = {
        name: outcome.percent for name, outcome in outcomes.items() if outcome.percent is not None
    }
    try:
        pushed = telemetry.record_run(results, percents, status, at)
    except Exception as exc:  # the sink promises not to raise; a decision never depends on it
        pushed = f"telemetry not recorded: {exc}"
    if pushed is None or pushed.startswith("pushed"):
        return None
    get_run_logger().warning("telemetry: %s", pushed)
    return pushed


@task(cache_policy=NO_CACHE)
def write_audit(
    outcomes: Mapping[str, FeatureOutcome], at: datetime, log_path: str | None = None
) -> list[str]:
    """The Markdown log lines and the Prefect artifacts. The Redis stream entry was already
    written atomically with the change; this is the human-readable copy."""
    lines = []
    for outcome in outcomes.values():
        decision = outcome.decision
        if decision is None or not decision.is_change or not (outcome.applied or outcome.dry_run):
            continue
        if outcome.dry_run and outcome.audit_id is None:
            continue  # an unchanged recommendation: the stream did not append it again
        lines.append(
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
        )
        create_markdown_artifact(
            markdown=_change_markdown(outcome, at),
            key=f"rollout-{_artifact_slug(outcome.feature)}",
            description=f"{outcome.feature}: {decision.action} {decision.from_percent:g}% -> "
            f"{decision.to_percent:g}%",
        )
    create_table_artifact(
        table=controller.decision_rows(outcomes),
        key=DECISIONS_ARTIFACT_KEY,
        description=f"Rollout decisions at {at.isoformat()}",
    )
    return lines


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
