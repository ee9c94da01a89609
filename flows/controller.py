"""The rollout controller flow: fetch, evaluate, guard, apply, emit, audit.

Deployed every 10 minutes (prefect.yaml), and as the `abort` deployment that a
`rollout.alert.firing` event triggers with the alert as its `alert` parameter (the fast abort).
A held tick is a normal Completed run; the run is
Failed when any feature failed (Prometheus unreachable after retries, Redis errors) or the
configuration is wrong. The returned state's data is the list of FeatureOutcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import quote

from rollout_core.abort import Alert, aborted_units, ignore_reason, parse_alert
from rollout_core.bootstrap import Adapters, Settings, current_adapters, error_telemetry
from rollout_core.config import DEFAULT_CONFIG_PATH, FeatureSpec, expand_segments, load_config
from rollout_core.controller import (
    FeatureOutcome,
    failed_outcomes,
    resolve_dry_run,
    run_status,
    stale_run_reason,
    summarize,
    unconfirmed_warning,
)
from rollout_core.errors import ConfigError, FlagStoreError, MetricsUnavailable
from rollout_core.ports import FlagStore, MetricsSource
from rollout_core.urls import redact_url
from tasks.controller import (
    add_alert_verdict,
    announce_changes,
    apply_flag,
    check_guards,
    emit_metrics,
    evaluate_policy,
    fetch_slos_with_backoff,
    read_abort_episode,
    read_flags,
    write_audit,
)
from tasks.write_memory import recall_writes, remember_writes

__all__ = ["PAUSED_REASON", "RUN_TIMEOUT_SECONDS", "outcomes_of", "rollout_controller"]

PAUSED_REASON = "Skipped: the controller is paused (kill switch)"


# under the 10-minute schedule: a hung run must end before the next one is due (CANCEL_NEW)
RUN_TIMEOUT_SECONDS = 540


@flow(name="rollout-controller", log_prints=True, timeout_seconds=RUN_TIMEOUT_SECONDS)
def rollout_controller(
    features: list[str] | None = None,
    dry_run: bool | None = None,
    config_path: str = DEFAULT_CONFIG_PATH,
    now: datetime | None = None,
    alert: dict[str, Any] | None = None,
) -> State[Any]:
    """One pass over the configured features (or the named ones). `now` injects the clock
    (backtests, the demo); `dry_run=None` reads ROLLOUT_DRY_RUN and defaults to a dry run.
    `alert` (the abort deployment): a firing alert; only its feature is judged, the alert
    being a breach by itself when the feature lists it in `abort_on` (else it is ignored)."""
    logger = get_run_logger()
    at = _as_utc(now or datetime.now(UTC))
    # every run counts, but only a run the schedule created moves last_success: not a fast
    # abort, not `rollout run` nor a manual deployment run (RolloutControllerStalled)
    scheduled = alert is None and _created_by_schedule()
    skip = _stale_run_reason()
    if skip is not None:
        logger.warning(skip)
        return Completed(name="Skipped", message=skip)
    adapters: Adapters | None = None
    try:  # every configuration problem, the environment and adapter wiring included
        settings = Settings.from_env()
        adapters = current_adapters(settings)
        live = not resolve_dry_run(dry_run, settings.dry_run)
        config = load_config(config_path)
        abort = parse_alert(alert) if alert is not None else None
        if abort is not None:
            ignored = ignore_reason(config.features.get(abort.feature), abort)
            if ignored is not None:
                logger.warning("ignored: %s", ignored)
                return Completed(name="Ignored", message=f"ignored: {ignored}")
            features = [abort.feature]
        specs = config.select(features)
    except ConfigError as error:
        # nothing was read or written; the run counts as runs_total{status="error"}
        logger.error("configuration error: %s", error)
        telemetry = adapters.telemetry if adapters is not None else error_telemetry()
        if telemetry is not None:
            emit_metrics(quote(telemetry), {}, "error", at, scheduled=scheduled)
        return Failed(message=f"configuration error: {error}")
    memory_notes: list[str] = []  # the write memory's warnings (ROLLOUT_WRITE_MEMORY)
    outcomes = _decide_and_apply(
        adapters.store, adapters.source, specs, at, live, settings, abort, memory_notes
    )
    status = run_status(outcomes)
    # the human-readable copy and the events come before telemetry: whatever they report is a
    # warning in the same run whose status telemetry counts, so the two always agree
    warnings = {
        "audit copy": write_audit(quote(outcomes), at, settings.audit_log_path),
        "events": announce_changes(quote(outcomes)),
        "telemetry": emit_metrics(
            quote(adapters.telemetry), quote(outcomes), status, at, scheduled=scheduled
        ),
        "durability": unconfirmed_warning(outcomes),
        "write memory": "; ".join(memory_notes) or None,
    }
    if warnings["durability"]:
        logger.warning(warnings["durability"])
    mode = ("live" if live else "dry run") + (f", abort on {abort.name}" if abort else "")
    message = f"{mode}: " + summarize(outcomes)
    message += "".join(f"\nwarning: {part}: {text}" for part, text in warnings.items() if text)
    for outcome in outcomes.values():
        (logger.error if outcome.is_failed else logger.info)(outcome.summary)
    data = list(outcomes.values())
    if status != "ok":
        return Failed(message=message, data=data)
    return Completed(message=message, data=data)


def outcomes_of(state: State[Any]) -> list[FeatureOutcome]:
    """A finished run's FeatureOutcome list; empty for a run that decided nothing (skipped,
    a configuration error, crashed)."""
    from prefect.exceptions import MissingResult

    try:
        data = state.result(raise_on_failure=False)
    except MissingResult:
        return []
    return [o for o in data if isinstance(o, FeatureOutcome)] if isinstance(data, list) else []


def _decide_and_apply(
    store: FlagStore,
    source: MetricsSource,
    specs: list[FeatureSpec],
    at: datetime,
    live: bool,
    settings: Settings,
    abort: Alert | None = None,
    memory_notes: list[str] | None = None,
) -> dict[str, FeatureOutcome]:
    """The task sequence; an unreachable Prometheus or Redis fails every feature, writes nothing.
    The write memory's warnings (not loaded, not saved) are appended to `memory_notes`."""
    specs = expand_segments(specs)  # a segmented feature is judged segment by segment
    names = [spec.name for spec in specs]
    fetch = fetch_slos_with_backoff(settings.fetch_backoff_seconds)
    # quote(): Prefect would otherwise walk every nested value of every argument looking for
    # futures, about 5 s per run at 1,000 features; these are plain values, never futures.
    memory = settings.write_memory and live  # ROLLOUT_WRITE_MEMORY: see tasks/write_memory.py
    target = redact_url(settings.redis_target()) if memory else ""
    notes = memory_notes if memory_notes is not None else []
    recalled = recall_writes(quote(store), target, quote(names)) if memory else None
    if recalled is not None and recalled.warning:
        notes.append(recalled.warning)
    try:
        snapshots = fetch(quote(source), quote(specs), at)
        states = read_flags(quote(store), quote(names))
    except (MetricsUnavailable, FlagStoreError) as error:
        return failed_outcomes(names, error)
    proposals = evaluate_policy(quote(specs), quote(snapshots), quote(states))
    episodes: dict[str, str] = {}
    if abort is not None:  # the feature, or the segments the alert names (all without a label)
        episodes = {unit: abort.episode_of(unit) for unit in aborted_units(specs, abort)}
        try:
            handled = [u for u, e in episodes.items() if read_abort_episode(quote(store), e)]
        except FlagStoreError as error:
            return failed_outcomes(names, error)
        proposals = add_alert_verdict(
            quote(specs), quote(proposals), quote(states), quote(abort), handled
        )
    decisions = check_guards(quote(specs), quote(states), quote(proposals), at, quote(snapshots))
    outcomes: dict[str, FeatureOutcome] = apply_flag(
        quote(store), quote(decisions), quote(states), at, dry_run=not live, episodes=episodes
    )
    if recalled is not None:
        unsaved = remember_writes(quote(store), target, quote(recalled))
        if unsaved:
            notes.append(unsaved)
    return outcomes


def _as_utc(moment: datetime) -> datetime:
    """A naive `now` is UTC, as everywhere else in the controller."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stale_run_reason() -> str | None:
    """Compare the run's scheduled start with the wall clock (not the injected `now`), against
    the interval of the run's own deployment schedule: prefect.yaml is the one source of it.
    A run without a deployment, or a deployment without an interval, is never stale. A run of
    a deployment whose kill switch is off (paused, or a schedule inactive) never acts.

    Read from the run context: Prefect 3.9's env mock of `prefect.runtime.flow_run.
    scheduled_start_time` raises ValueError, so that path is avoided."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.deployment_id is None:
        return None
    expected = context.flow_run.expected_start_time
    if expected is None:
        return None
    deployment = _read_deployment(context.flow_run.deployment_id)
    if deployment is None:
        return None
    if _is_switched_off(deployment):
        return PAUSED_REASON
    interval = min(filter(None, map(_gap_of, deployment.schedules or ())), default=None)
    if interval is None:
        return None
    # a plain datetime: Prefect's DateTime subtracts into a pendulum Interval, not a timedelta
    scheduled = datetime.fromtimestamp(expected.timestamp(), UTC)
    return stale_run_reason(scheduled, datetime.now(UTC), interval)


def _created_by_schedule() -> bool:
    """The run was created by its deployment's schedule: Prefect's scheduler sets the flow
    run's `auto_scheduled`; `rollout run`, a manual or an event-triggered deployment run (the
    fast abort) have it False."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return bool(context is not None and context.flow_run and context.flow_run.auto_scheduled)


def _read_deployment(deployment_id: UUID) -> Any | None:
    """The run's deployment; None when the API cannot say (the run then acts)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment(deployment_id)
    except Exception as exc:  # the run goes on: acting late beats never acting
        get_run_logger().warning("could not read the deployment's schedule (%s); not skipped", exc)
        return None


def _is_switched_off(deployment: Any) -> bool:
    """The kill switch is off: the deployment paused or one of its schedules inactive (as
    deployments.kill_switch.SwitchState.is_switched_off)."""
    return bool(deployment.paused) or any(not s.active for s in deployment.schedules or ())


def _gap_of(deployment_schedule: Any) -> timedelta | None:
    """An interval schedule's interval; a cron or rrule schedule has no single interval."""
    from prefect.client.schemas.schedules import IntervalSchedule

    schedule = deployment_schedule.schedule
    return schedule.interval if isinstance(schedule, IntervalSchedule) else None
