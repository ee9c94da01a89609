"""Guards: pure checks that may hold a proposed decision, each reporting why with numbers.

Not initialised, disabled and paused stop every change. A history or audience key that does
not parse, dwell, cooldown and freeze windows only delay promotions: a rollback is never
delayed by them (a bad key is then a warning in its reasons).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from rollout_core.config import FeatureSpec, FreezeWindow
from rollout_core.model import Action, Decision, Deferred, FlagState, GuardResult, format_percent
from rollout_sdk.keys import unit_key

__all__ = [
    "GUARDS",
    "Guard",
    "check_guards",
    "cooldown_guard",
    "cooldown_remaining",
    "disabled_guard",
    "dwell_guard",
    "dwell_remaining",
    "format_duration",
    "freeze_guard",
    "history_guard",
    "is_frozen",
    "not_initialised_guard",
    "paused_guard",
    "require_utc",
]

Guard = Callable[[FeatureSpec, FlagState, Decision, datetime], GuardResult]
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def require_utc(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is refused, since its zone would be a guess."""
    if now.tzinfo is UTC:
        return now
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            f"now={now.isoformat()} has no time zone; pass an aware UTC datetime, "
            "e.g. datetime.now(UTC)"
        )
    return now.astimezone(UTC)


def _as_utc(moment: datetime) -> datetime:
    # flag keys hold ISO-8601 UTC, so a naive time read from the store is UTC
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_duration(span: timedelta) -> str:
    """`timedelta(minutes=6, seconds=40)` -> "6m40s"; whole units only, "0s" for nothing."""
    seconds = max(0, math.ceil(span.total_seconds()))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _clock(moment: datetime, now: datetime) -> str:
    text = moment.strftime("%H:%M:%S" if moment.second else "%H:%M") + "Z"
    return text if moment.date() == now.date() else f"{moment:%Y-%m-%d} {text}"


def _remaining(since: datetime | None, wait: timedelta, now: datetime) -> timedelta:
    if since is None:
        return timedelta(0)
    return max(timedelta(0), wait - (now - _as_utc(since)))


def dwell_remaining(spec: FeatureSpec, state: FlagState, now: datetime) -> timedelta:
    """How long promotions still wait after the last change (zero when none is recorded)."""
    return _remaining(state.last_change_time, spec.dwell, require_utc(now))


def cooldown_remaining(spec: FeatureSpec, state: FlagState, now: datetime) -> timedelta:
    """How long promotions still wait after the last rollback (zero when none is recorded)."""
    return _remaining(state.last_rollback_time, spec.cooldown, require_utc(now))


# what a guard answers when it lets a decision through for the same reason every tick: frozen,
# so one instance serves every pass (a backtest asks millions of times)
_INITIALISED = GuardResult("not_initialised", False, "not_initialised: flag keys present")
_HISTORY_PARSES = GuardResult("history", False, "history: every history key parses")
_NO_FREEZE_WINDOWS = GuardResult("freeze", False, "freeze: no freeze windows configured")
_PROMOTIONS_ONLY = {
    name: GuardResult(name, False, f"{name}: applies to promotions only")
    for name in ("dwell", "cooldown", "freeze")
}


@lru_cache(maxsize=16384)
def _enabled(feature: str) -> GuardResult:
    return GuardResult("disabled", False, f"disabled: {unit_key(feature, 'enabled')} is true")


@lru_cache(maxsize=16384)
def _unpaused(feature: str) -> GuardResult:
    return GuardResult("paused", False, f"paused: {unit_key(feature, 'paused')} is false")


def not_initialised_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    if state.exists:
        return _INITIALISED
    key = unit_key(spec.name, "rollout_percent")
    init = f"{spec.feature} --config rollouts.yaml" if spec.parent else spec.name
    message = f"not_initialised: {key} is absent; run `rollout init {init}`"
    return GuardResult("not_initialised", True, message)


def disabled_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    if state.enabled:
        return _enabled(spec.name)
    key = unit_key(spec.name, "enabled")
    message = f"disabled: {key} is false; no change while it is switched off"
    return GuardResult("disabled", True, message)


def paused_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    if not state.paused:
        return _unpaused(spec.name)
    key = unit_key(spec.name, "paused")
    resume = spec.name
    if spec.parent is not None and state.raw_value("feature_paused") == "true":
        key, resume = unit_key(spec.name, "feature_paused"), spec.parent  # the whole feature
    elif spec.parent is not None:
        resume = f"{spec.parent} --segment {spec.segment}"
    message = f"paused: {key} is true; no change until `rollout resume {resume}`"
    return GuardResult("paused", True, message)


def history_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    """Keys only promotions need (dwell and cooldown history, the audience) that do not parse
    hold promotions; anything else goes through, with the problem as a warning."""
    if not state.problems:
        return _HISTORY_PARSES
    problems = "; ".join(state.problems)
    if decision.action is not Action.PROMOTE:
        return GuardResult("history", False, f"warning: {problems}")
    message = f"history: {problems}; no promotion until that is resolved"
    return GuardResult("history", True, message)


def _wait_guard(
    name: str,
    since_what: str,
    since: datetime | None,
    wait: timedelta,
    decision: Decision,
    now: datetime,
) -> GuardResult:
    """Dwell and cooldown: promotions wait `wait` after `since`; nothing else waits.
    The message is formatted when first read."""
    if decision.action is not Action.PROMOTE:
        return _PROMOTIONS_ONLY[name]
    if since is None:
        return GuardResult(name, False, f"{name}: no {since_what} recorded")
    since = _as_utc(since)
    remaining = _remaining(since, wait, now)
    blocks = remaining > timedelta(0)
    return GuardResult(
        name, blocks, Deferred(_wait_text, name, since_what, since, wait, remaining, now)
    )


def _wait_text(
    name: str,
    since_what: str,
    since: datetime,
    wait: timedelta,
    remaining: timedelta,
    now: datetime,
) -> str:
    elapsed, clock = now - since, _clock(since, now)
    if remaining <= timedelta(0):
        return (
            f"{name}: {format_duration(elapsed)} since {since_what} at {clock} "
            f">= {format_duration(wait)}"
        )
    shown = format_duration(elapsed) if elapsed >= timedelta(0) else "0s (clock skew?)"
    return (
        f"{name}: {shown} of {format_duration(wait)} since {since_what} at "
        f"{clock}; promotion waits {format_duration(remaining)}"
    )


def dwell_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    return _wait_guard("dwell", "last change", state.last_change_time, spec.dwell, decision, now)


def cooldown_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    since = state.last_rollback_time
    return _wait_guard("cooldown", "last rollback", since, spec.cooldown, decision, now)


def is_frozen(window: FreezeWindow, now: datetime) -> bool:
    """Whether `now` falls in the window: a listed local weekday and a local time in
    [start, end). When end <= start the window runs past midnight into the next day."""
    local = require_utc(now).astimezone(ZoneInfo(window.tz))
    day, yesterday = _WEEKDAYS[local.weekday()], _WEEKDAYS[local.weekday() - 1]
    clock, start, end = local.time().replace(tzinfo=None), window.start or time(0), window.end
    if end is None:
        return day in window.days and clock >= start
    if start < end:
        return day in window.days and start <= clock < end
    return (day in window.days and clock >= start) or (yesterday in window.days and clock < end)


def _describe_window(window: FreezeWindow) -> str:
    start = (window.start or time(0)).strftime("%H:%M")
    end = window.end.strftime("%H:%M") if window.end is not None else "24:00"
    return f"{','.join(window.days)} {start}-{end} {window.tz}"


def freeze_guard(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> GuardResult:
    if decision.action is not Action.PROMOTE:
        return _PROMOTIONS_ONLY["freeze"]
    for window in spec.freeze:
        if is_frozen(window, now):
            return GuardResult("freeze", True, Deferred(_frozen_text, window, now))
    if not spec.freeze:
        return _NO_FREEZE_WINDOWS
    return GuardResult("freeze", False, f"freeze: outside all {len(spec.freeze)} window(s)")


def _frozen_text(window: FreezeWindow, now: datetime) -> str:
    local = now.astimezone(ZoneInfo(window.tz))
    moment = f"{_WEEKDAYS[local.weekday()]} {local:%H:%M} {window.tz}"
    return (
        f"freeze: {moment} is inside the freeze window "
        f"{_describe_window(window)}; no promotions until it ends"
    )


GUARDS: tuple[Guard, ...] = (
    not_initialised_guard,
    disabled_guard,
    paused_guard,
    history_guard,
    dwell_guard,
    cooldown_guard,
    freeze_guard,
)


def check_guards(
    spec: FeatureSpec, state: FlagState, decision: Decision, now: datetime
) -> Decision:
    """The decision after every guard; the first guard that blocks turns it into a hold that
    still reports what the policy proposed. The reasons are formatted when first read."""
    now = require_utc(now)
    results = tuple([guard(spec, state, decision, now) for guard in GUARDS])
    proposed = decision.proposed or decision.action
    proposed_percent = (
        decision.proposed_percent if decision.proposed_percent is not None else decision.to_percent
    )
    blocker = next((result for result in results if result.blocks), None)
    # built field by field rather than with dataclasses.replace: this runs for every feature
    # on every tick of a backtest; every field of Decision is set here
    if blocker is None:
        return Decision(
            feature=decision.feature,
            action=decision.action,
            from_percent=decision.from_percent,
            to_percent=decision.to_percent,
            reasons=Deferred(_passed_reasons, decision, results),
            verdicts=decision.verdicts,
            proposed=proposed,
            proposed_percent=proposed_percent,
            guard=decision.guard,
            guards=results,
            inputs=decision.inputs,
        )
    return Decision(
        feature=decision.feature,
        action=Action.HOLD,
        from_percent=decision.from_percent,
        to_percent=decision.from_percent,
        reasons=Deferred(_held_reasons, decision, blocker),
        verdicts=decision.verdicts,
        proposed=proposed,
        proposed_percent=proposed_percent,
        guard=blocker.name,
        guards=results,
        inputs=decision.inputs,
    )


def _passed_reasons(decision: Decision, results: tuple[GuardResult, ...]) -> tuple[str, ...]:
    """The policy's reasons, then any guard's warning (a history key that does not parse)."""
    warnings = tuple(r.message for r in results if r.message.startswith("warning: "))
    return (*decision.reasons, *warnings)


def _held_reasons(decision: Decision, blocker: GuardResult) -> tuple[str, ...]:
    """The hold's reason ("Hold at 10%: dwell: ..."), then what the policy proposed and why."""
    held = f"Hold at {format_percent(decision.from_percent)}: {blocker.message}"
    was_hold = decision.action is Action.HOLD
    first, *rest = decision.reasons or ("",)
    policy_reasons = (first if was_hold else f"proposed: {first}", *rest)
    return (held, *(reason for reason in policy_reasons if reason))
