"""`rollout controller status` as text, and who acts by default (pure: no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from deployments.kill_switch import RunSummary, ScheduleState, SwitchState
from rollout_cli.controller_commands import format_status


def switch(*, active: bool, paused: bool = False) -> SwitchState:
    every = timedelta(seconds=600)
    schedule = ScheduleState(uuid4(), "every-10-minutes", active, every, "every 600 s")
    return SwitchState("rollout-controller/every-10-minutes", uuid4(), paused, (schedule,))


def test_status_text_says_paused_names_the_interval_and_lists_the_runs_newest_first() -> None:
    runs = [
        RunSummary("brave-fox", "Completed", datetime(2026, 1, 1, 10, 10, tzinfo=UTC), "dry run"),
        RunSummary("calm-owl", "Failed", datetime(2026, 1, 1, 10, 0, tzinfo=UTC), "redis down"),
    ]

    text = format_status(switch(active=False, paused=True), runs)

    lines = text.splitlines()
    assert lines[0] == (
        "rollout-controller/every-10-minutes: PAUSED "
        "(schedule every-10-minutes inactive, deployment paused)"
    )
    assert lines[1].startswith("  schedule every-10-minutes: every 600 s, inactive (id ")
    assert lines[3:] == [
        "    2026-01-01T10:10:00+00:00  Completed  brave-fox  dry run",
        "    2026-01-01T10:00:00+00:00  Failed     calm-owl  redis down",
    ]


def test_status_text_says_running_when_the_schedule_is_active_and_no_run_exists() -> None:
    text = format_status(switch(active=True), [])

    assert text.splitlines()[0] == "rollout-controller/every-10-minutes: RUNNING (schedule active)"
    assert text.splitlines()[-1] == "  no runs yet"


def test_a_paused_deployment_alone_switches_the_controller_off() -> None:
    assert switch(active=True, paused=True).is_switched_off
    assert not switch(active=True).is_switched_off
