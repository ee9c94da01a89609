"""The rollout controller flow: fetch, evaluate, guard, apply, emit, audit.

Deployed every 10 minutes (prefect.yaml). A held tick is a normal Completed run; the run is
Failed when any feature failed (Prometheus unreachable after retries, Redis errors).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

from rollout_core.bootstrap import Settings, current_adapters
from rollout_core.config import DEFAULT_CONFIG_PATH, load_config
from rollout_core.controller import (
    FeatureOutcome,
    failed_outcomes,
    resolve_dry_run,
    run_status,
    stale_run_reason,
    summarize,
)
from rollout_core.errors import FlagStoreError, MetricsUnavailable
from tasks.controller import (
    apply_flag,
    check_guards,
    emit_metrics,
    evaluate_policy,
    fetch_slos,
    read_flags,
    write_audit,
)

__all__ = ["SCHEDULE_INTERVAL", "rollout_controller"]

SCHEDULE_INTERVAL = timedelta(seconds=600)


@flow(name="rollout-controller", log_prints=True)
def rollout_controller(
    features: list[str] | None = None,
    dry_run: bool | None = None,
    config_path: str = DEFAULT_CONFIG_PATH,
    now: datetime | None = None,
) -> State[Any]:
    """One pass over the configured features (or the named ones). `now` injects the clock
    (backtests, the demo); `dry_run=None` reads ROLLOUT_DRY_RUN and defaults to a dry run."""
    logger = get_run_logger()
    skip = _stale_run_reason()
    if skip is not None:
        logger.warning(skip)
        return Completed(name="Skipped", message=skip)
    settings = Settings.from_env()
    live = not resolve_dry_run(dry_run, settings.dry_run)
    specs = load_config(config_path).select(features)
    at = (now or datetime.now(UTC)).astimezone(UTC)
    adapters = current_adapters(settings)
    names = [spec.name for spec in specs]
    outcomes: dict[str, FeatureOutcome]
    try:
        snapshots = fetch_slos(adapters.source, specs, at)
        states = read_flags(adapters.store, names)
    except (MetricsUnavailable, FlagStoreError) as error:
        outcomes = failed_outcomes(names, error)
    else:
        proposals = evaluate_policy(specs, snapshots, states)
        decisions = check_guards(specs, states, proposals, at)
        outcomes = apply_flag(adapters.store, decisions, states, at, dry_run=not live)
    status = run_status(outcomes)
    emit_metrics(adapters.telemetry, outcomes, status, at)
    write_audit(outcomes, at)
    message = ("live: " if live else "dry run: ") + summarize(outcomes)
    for outcome in outcomes.values():
        (logger.error if outcome.is_failed else logger.info)(outcome.summary)
    data = list(outcomes.values())
    if status != "ok":
        return Failed(message=message, data=data)
    return Completed(message=message, data=data)


def _stale_run_reason() -> str | None:
    """Compare the scheduled start with the wall clock (not the injected `now`)."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    if scheduled is None or flow_run.get_id() is None:
        return None
    interval = timedelta(
        seconds=float(
            os.environ.get("ROLLOUT_SCHEDULE_INTERVAL_SECONDS", SCHEDULE_INTERVAL.seconds)
        )
    )
    return stale_run_reason(scheduled, datetime.now(UTC), interval)
