"""Guards hold promotions for dwell, cooldown and freeze windows, and every change when the
feature is paused, disabled or not initialised. Rollbacks never wait."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollout_core.config import FeatureSpec, FreezeWindow
from rollout_core.guards import (
    check_guards,
    cooldown_remaining,
    dwell_remaining,
    format_duration,
    is_frozen,
)
from rollout_core.model import Action, Decision, FlagState

THURSDAY = datetime(2025, 10, 9, 12, 0, tzinfo=UTC)
FRIDAY = datetime(2025, 10, 10, 12, 0, tzinfo=UTC)
SLOS = [{"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01}]


def spec(**overrides: Any) -> FeatureSpec:
    return FeatureSpec.model_validate({"name": "google", "slos": SLOS, **overrides})


def proposal(action: Action, current: float = 10, target: float = 50) -> Decision:
    to_percent = current if action is Action.HOLD else target
    return Decision(
        "google",
        action,
        current,
        to_percent,
        (f"{action} by policy", "error_rate numbers"),
        proposed=action,
        proposed_percent=to_percent,
    )


PROMOTE = proposal(Action.PROMOTE)
ROLLBACK = proposal(Action.ROLLBACK, current=50, target=10)


def test_dwell_holds_a_promotion_and_says_how_long_it_waits() -> None:
    state = FlagState("google", 10, last_change_time=datetime(2025, 10, 9, 10, 0, tzinfo=UTC))
    now = datetime(2025, 10, 9, 10, 6, 40, tzinfo=UTC)
    decision = check_guards(spec(), state, PROMOTE, now)
    assert (decision.action, decision.to_percent, decision.guard) == (Action.HOLD, 10, "dwell")
    message = "dwell: 6m40s of 15m since last change at 10:00Z; promotion waits 8m20s"
    assert decision.reasons == (
        f"Hold at 10%: {message}",
        "proposed: promote by policy",
        "error_rate numbers",
    )
    assert (decision.proposed, decision.proposed_percent) == (Action.PROMOTE, 50)
    shorter = check_guards(spec(dwell="5m"), state, PROMOTE, now)
    assert (shorter.action, shorter.guard) == (Action.PROMOTE, None)


def test_cooldown_holds_a_promotion_after_a_rollback() -> None:
    rolled_back = datetime(2025, 10, 9, 11, 40, tzinfo=UTC)
    state = FlagState("google", 10, last_change_time=rolled_back, last_rollback_time=rolled_back)
    decision = check_guards(spec(), state, PROMOTE, THURSDAY)
    assert decision.guard == "cooldown"
    assert decision.reasons[0] == (
        "Hold at 10%: cooldown: 20m of 1h since last rollback at 11:40Z; promotion waits 40m"
    )
    assert check_guards(spec(cooldown="15m"), state, PROMOTE, THURSDAY).action is Action.PROMOTE


def test_freeze_window_holds_promotions_on_its_days_only() -> None:
    frozen = spec(freeze=[{"days": ["fri", "sat", "sun"], "tz": "UTC"}])
    held = check_guards(frozen, FlagState("google", 10), PROMOTE, FRIDAY)
    assert held.guard == "freeze"
    assert "fri 12:00 UTC is inside the freeze window fri,sat,sun 00:00-24:00 UTC" in held.reason
    assert check_guards(frozen, FlagState("google", 10), PROMOTE, THURSDAY).guard is None


@pytest.mark.parametrize(
    "state",
    [
        FlagState("google", 50, last_change_time=FRIDAY - timedelta(minutes=1)),
        FlagState("google", 50, last_rollback_time=FRIDAY - timedelta(minutes=1)),
        FlagState("google", 50),
    ],
    ids=["dwell", "cooldown", "freeze"],
)
def test_rollback_is_not_delayed_by_dwell_cooldown_or_freeze(state: FlagState) -> None:
    frozen = spec(freeze=[{"days": ["fri"], "tz": "UTC"}])
    decision = check_guards(frozen, state, ROLLBACK, FRIDAY)
    assert (decision.action, decision.to_percent, decision.guard) == (Action.ROLLBACK, 10, None)
    assert [result.blocks for result in decision.guards] == [False] * 7


def test_paused_makes_no_change_but_reports_the_would_be_rollback() -> None:
    decision = check_guards(spec(), FlagState("google", 50, paused=True), ROLLBACK, FRIDAY)
    assert (decision.action, decision.to_percent, decision.guard) == (Action.HOLD, 50, "paused")
    assert (decision.proposed, decision.proposed_percent) == (Action.ROLLBACK, 10)
    assert "rollout resume google" in decision.reasons[0]
    assert decision.reasons[1] == "proposed: rollback by policy"
    resumed = check_guards(spec(), FlagState("google", 50, paused=False), ROLLBACK, FRIDAY)
    assert resumed.action is Action.ROLLBACK


def test_disabled_feature_holds() -> None:
    decision = check_guards(spec(), FlagState("google", 10, enabled=False), PROMOTE, FRIDAY)
    assert (decision.action, decision.guard) == (Action.HOLD, "disabled")
    assert "flags:google:enabled is false" in decision.reasons[0]


def test_uninitialised_feature_holds_and_says_to_run_rollout_init() -> None:
    decision = check_guards(spec(), FlagState("google", 0, exists=False), PROMOTE, FRIDAY)
    assert (decision.action, decision.guard) == (Action.HOLD, "not_initialised")
    assert "run `rollout init google`" in decision.reasons[0]


def test_a_held_hold_keeps_the_policy_reason_without_a_proposed_prefix() -> None:
    hold = proposal(Action.HOLD)
    decision = check_guards(spec(), FlagState("google", 10, paused=True), hold, FRIDAY)
    assert decision.reasons[1:] == ("hold by policy", "error_rate numbers")


def test_every_guard_reports_in_a_fixed_order_and_the_first_blocker_names_the_hold() -> None:
    state = FlagState("google", 10, paused=True, last_change_time=FRIDAY)
    decision = check_guards(spec(), state, PROMOTE, FRIDAY)
    names = [result.name for result in decision.guards]
    assert names == [
        "not_initialised",
        "disabled",
        "paused",
        "history",
        "dwell",
        "cooldown",
        "freeze",
    ]
    blocks = [result.blocks for result in decision.guards]
    assert blocks == [False, False, True, False, True, False, False]
    assert decision.guard == "paused"


def test_passing_guards_leave_the_decision_as_proposed() -> None:
    decision = check_guards(spec(), FlagState("google", 10), PROMOTE, FRIDAY)
    assert replace(decision, guards=()) == PROMOTE
    assert len(decision.guards) == 7


BAD_HISTORY = (
    "flags:google:last_percent is 'fifty'; expected a number from 0 to 100 such as 10 or 0.5",
)


def test_a_corrupt_history_key_holds_a_promotion_naming_the_key() -> None:
    state = FlagState("google", 10, problems=BAD_HISTORY)
    decision = check_guards(spec(), state, PROMOTE, FRIDAY)
    assert (decision.action, decision.guard) == (Action.HOLD, "history")
    assert "flags:google:last_percent is 'fifty'" in decision.reasons[0]


def test_a_corrupt_history_key_lets_a_rollback_through_with_a_warning() -> None:
    state = FlagState("google", 50, problems=BAD_HISTORY)
    decision = check_guards(spec(), state, ROLLBACK, FRIDAY)
    assert (decision.action, decision.to_percent, decision.guard) == (Action.ROLLBACK, 10, None)
    assert decision.reasons[-1].startswith("warning: flags:google:last_percent is 'fifty'")


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        check_guards(spec(), FlagState("google", 10), PROMOTE, datetime(2025, 10, 9, 12))


def test_a_naive_last_change_time_from_the_store_counts_as_utc() -> None:
    state = FlagState("google", 10, last_change_time=datetime(2025, 10, 9, 11, 55))
    assert check_guards(spec(), state, PROMOTE, THURSDAY).guard == "dwell"


def test_a_last_change_in_the_future_holds_promotions() -> None:
    state = FlagState("google", 10, last_change_time=THURSDAY + timedelta(minutes=5))
    decision = check_guards(spec(), state, PROMOTE, THURSDAY)
    assert decision.guard == "dwell"
    assert "clock skew" in decision.reasons[0]
    assert "promotion waits 20m" in decision.reasons[0]


def test_dwell_and_cooldown_remaining_for_status_displays() -> None:
    state = FlagState(
        "google",
        10,
        last_change_time=THURSDAY - timedelta(minutes=10),
        last_rollback_time=THURSDAY - timedelta(minutes=10),
    )
    assert dwell_remaining(spec(), state, THURSDAY) == timedelta(minutes=5)
    assert cooldown_remaining(spec(), state, THURSDAY) == timedelta(minutes=50)
    assert dwell_remaining(spec(dwell="5m"), state, THURSDAY) == timedelta(0)
    assert cooldown_remaining(spec(), FlagState("google"), THURSDAY) == timedelta(0)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=6, seconds=40), "6m40s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2, seconds=5), "2d5s"),
        (timedelta(seconds=0.2), "1s"),
    ],
)
def test_durations_render_compactly(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


def window(**fields: Any) -> FreezeWindow:
    return FreezeWindow.model_validate(fields)


def test_freeze_window_covers_start_but_not_end() -> None:
    evening = window(days=["fri"], start="17:30", end="20:00")
    at = FRIDAY.replace
    assert is_frozen(evening, at(hour=17, minute=30))
    assert not is_frozen(evening, at(hour=17, minute=29))
    assert not is_frozen(evening, at(hour=20, minute=0))
    assert not is_frozen(window(days=["thu"], start="17:30", end="20:00"), at(hour=18))


def test_freeze_window_without_end_runs_to_midnight() -> None:
    late = window(days=["fri"], start="17:30")
    assert is_frozen(late, FRIDAY.replace(hour=23, minute=59))
    assert not is_frozen(late, FRIDAY.replace(hour=17, minute=29))
    assert not is_frozen(late, FRIDAY.replace(hour=23, minute=59) + timedelta(minutes=1))


def test_freeze_window_with_start_after_end_wraps_past_midnight_into_the_next_day() -> None:
    night = window(days=["fri"], start="22:00", end="06:00")
    assert is_frozen(night, FRIDAY.replace(hour=23))
    assert is_frozen(night, FRIDAY.replace(hour=5) + timedelta(days=1))
    assert not is_frozen(night, FRIDAY.replace(hour=7) + timedelta(days=1))
    assert not is_frozen(night, FRIDAY.replace(hour=21))
    assert not is_frozen(night, FRIDAY.replace(hour=5))  # Friday early morning: Thursday's night
    assert is_frozen(window(days=["thu"], start="22:00", end="06:00"), FRIDAY.replace(hour=5))


def test_freeze_window_uses_its_own_time_zone() -> None:
    berlin_friday = window(days=["fri"], tz="Europe/Berlin")
    thursday_late_utc = datetime(2025, 10, 9, 23, 30, tzinfo=UTC)  # 01:30 on Friday in Berlin
    assert is_frozen(berlin_friday, thursday_late_utc)
    assert not is_frozen(window(days=["fri"], tz="UTC"), thursday_late_utc)


def test_freeze_window_follows_daylight_saving_time() -> None:
    office_hours = window(days=["mon"], start="09:00", end="10:00", tz="America/New_York")
    summer = datetime(2025, 7, 7, 13, 30, tzinfo=UTC)  # 09:30 EDT
    winter = datetime(2025, 12, 1, 13, 30, tzinfo=UTC)  # 08:30 EST
    assert is_frozen(office_hours, summer)
    assert not is_frozen(office_hours, winter)
