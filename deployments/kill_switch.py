"""The kill switch: the controller deployment's schedule, read, paused and resumed by name.

`rollout controller pause|resume|status`, `rollout serve` and `rollout deploy` all read the
switch here, so a restart or a redeploy keeps what the operator chose. The switch is off when
the deployment is paused or its schedule is inactive; `pause` sets the schedule inactive,
`resume` sets it active and unpauses the deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

__all__ = [
    "CONTROLLER_DEPLOYMENT",
    "SCHEDULE_SLUG",
    "RunSummary",
    "ScheduleState",
    "SwitchState",
    "cancel_due_runs",
    "pause_controller",
    "read_switch",
    "recent_runs",
    "resume_controller",
]

CONTROLLER_DEPLOYMENT = "rollout-controller/every-10-minutes"
SCHEDULE_SLUG = "every-10-minutes"  # the slug prefect.yaml and `rollout serve` give the schedule


@dataclass(frozen=True)
class ScheduleState:
    id: UUID
    slug: str | None
    active: bool
    interval: timedelta | None  # None for a cron or rrule schedule
    description: str  # "every 600 s", or the cron / rrule text

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "slug": self.slug,
            "active": self.active,
            "interval_seconds": self.interval.total_seconds() if self.interval else None,
            "description": self.description,
        }


@dataclass(frozen=True)
class SwitchState:
    """One deployment as the kill switch sees it."""

    name: str  # "flow/deployment"
    deployment_id: UUID
    deployment_paused: bool
    schedules: tuple[ScheduleState, ...]

    @property
    def is_switched_off(self) -> bool:
        """No scheduled run will start: the deployment is paused or a schedule is inactive."""
        return self.deployment_paused or any(not s.active for s in self.schedules)

    def schedule(self, slug: str = SCHEDULE_SLUG) -> ScheduleState | None:
        return next((s for s in self.schedules if s.slug == slug), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.name,
            "deployment_id": str(self.deployment_id),
            "deployment_paused": self.deployment_paused,
            "switched_off": self.is_switched_off,
            "schedules": [s.to_json() for s in self.schedules],
        }


@dataclass(frozen=True)
class RunSummary:
    name: str
    state: str
    expected_start: datetime | None
    message: str

    def to_json(self) -> dict[str, Any]:
        start = self.expected_start.isoformat(timespec="seconds") if self.expected_start else None
        return {"name": self.name, "state": self.state, "expected_start": start,
                "message": self.message}  # fmt: skip


def _describe_schedule(schedule: Any) -> tuple[timedelta | None, str]:
    interval = getattr(schedule, "interval", None)
    if isinstance(interval, timedelta):
        return interval, f"every {interval.total_seconds():g} s"
    for kind in ("cron", "rrule"):
        text = getattr(schedule, kind, None)
        if text:
            return None, f"{kind} {text}"
    return None, str(schedule)


def read_switch(client: Any, name: str = CONTROLLER_DEPLOYMENT) -> SwitchState:
    """The deployment `flow/deployment` by name (never a page of every deployment); Prefect's
    ObjectNotFound when there is none."""
    deployment = client.read_deployment_by_name(name)
    schedules = []
    for item in deployment.schedules or ():
        interval, description = _describe_schedule(item.schedule)
        schedules.append(ScheduleState(item.id, item.slug, item.active, interval, description))
    return SwitchState(name, deployment.id, bool(deployment.paused), tuple(schedules))


def pause_controller(client: Any, name: str = CONTROLLER_DEPLOYMENT) -> SwitchState:
    """Set every schedule of the deployment inactive (Prefect deletes its future scheduled
    runs), then cancel the runs already due (Scheduled, Late, Pending), which Prefect keeps;
    the state afterwards. A deployment without a schedule is paused itself."""
    before = read_switch(client, name)
    for schedule in before.schedules:
        if schedule.active:
            client.update_deployment_schedule(before.deployment_id, schedule.id, active=False)
    if not before.schedules and not before.deployment_paused:
        client.pause_deployment(before.deployment_id)
    cancel_due_runs(client, before.deployment_id)
    return read_switch(client, name)


def cancel_due_runs(client: Any, deployment_id: UUID) -> list[str]:
    """Cancel every run of the deployment that has not started (Scheduled, Late, Pending): a
    schedule pause deletes only future runs, so overdue ones would start at the worker's next
    poll. The names of the runs cancelled."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    waiting = FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=waiting)),
    )
    cancelled = []
    for run in runs:
        message = "cancelled by the kill switch: the controller is paused"
        client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
        cancelled.append(run.name)
    return cancelled


def resume_controller(client: Any, name: str = CONTROLLER_DEPLOYMENT) -> SwitchState:
    """Set every schedule active and unpause the deployment; the state afterwards."""
    before = read_switch(client, name)
    for schedule in before.schedules:
        if not schedule.active:
            client.update_deployment_schedule(before.deployment_id, schedule.id, active=True)
    if before.deployment_paused:
        client.resume_deployment(before.deployment_id)
    return read_switch(client, name)


def recent_runs(client: Any, deployment_id: UUID, limit: int = 5) -> list[RunSummary]:
    """The newest `limit` runs that were due by now (future scheduled runs left out)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    due = FlowRunFilterExpectedStartTime(before_=datetime.now(UTC))  # type: ignore[arg-type]
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(expected_start_time=due),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    return [
        RunSummary(
            run.name,
            run.state.name if run.state else "unknown",
            run.expected_start_time,
            (run.state.message or "").splitlines()[0] if run.state and run.state.message else "",
        )
        for run in runs
    ]
