"""Pure formatters for the CLI: values in, text or Rich tables out. No Redis, no clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.table import Table
from rich.text import Text

from rollout_core.audit import AuditEntry, one_line
from rollout_core.flags import SEED, WriteResult, format_time
from rollout_core.model import FlagState, format_percent
from rollout_core.ports import ApplyResult
from rollout_sdk.flag_values import parse_percent_value

__all__ = [
    "StatusRow",
    "audience_message",
    "audit_json",
    "audit_table",
    "format_duration",
    "init_message",
    "pause_message",
    "remaining",
    "set_message",
    "status_json",
    "status_row",
    "status_table",
]


def remaining(since: datetime | None, window: timedelta, now: datetime) -> timedelta:
    """How much of `window` is left since `since`; nothing when it never started."""
    if since is None:
        return timedelta(0)
    return max(timedelta(0), since + window - now)


def format_duration(span: timedelta) -> str:
    """`1h 5m`, `12m 30s`, `45s`; zero is `0s`."""
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{seconds}s" if seconds or not (hours or minutes) else "")
    return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class StatusRow:
    """One feature's status line: its flag state (or why it could not be read) and timers."""

    feature: str
    state: FlagState | None
    error: str | None
    dwell: timedelta
    cooldown: timedelta
    timing_from: str  # the config file, or "defaults"
    dwell_remaining: timedelta
    cooldown_remaining: timedelta
    overrides: tuple[tuple[str, str, bool], ...] = ()  # (workspace|actor, id, on)

    def to_json(self) -> dict[str, object]:
        state = self.state
        times = {
            name: None
            if state is None or getattr(state, name) is None
            else format_time(getattr(state, name))
            for name in ("last_change_time", "last_rollback_time")
        }
        return {
            "feature": self.feature,
            "initialised": None if state is None else state.exists,
            "percent": None if state is None else state.percent,
            "enabled": None if state is None else state.enabled,
            "internal_only": None if state is None else state.internal_only,
            "paused": None if state is None else state.paused,
            "last_percent": None if state is None else state.last_percent,
            **times,
            "overrides": [
                {"kind": kind, "id": unit, "on": is_on} for kind, unit, is_on in self.overrides
            ],
            "dwell_seconds": self.dwell.total_seconds(),
            "cooldown_seconds": self.cooldown.total_seconds(),
            "dwell_remaining_seconds": self.dwell_remaining.total_seconds(),
            "cooldown_remaining_seconds": self.cooldown_remaining.total_seconds(),
            "timing_from": self.timing_from,
            "error": self.error,
            "problems": [] if state is None else list(state.problems),
        }


def status_row(
    feature: str,
    state: FlagState | Exception,
    dwell: timedelta,
    cooldown: timedelta,
    timing_from: str,
    now: datetime,
) -> StatusRow:
    if isinstance(state, Exception):
        zero = timedelta(0)
        return StatusRow(feature, None, str(state), dwell, cooldown, timing_from, zero, zero)
    dwell_left = remaining(state.last_change_time, dwell, now)
    cooldown_left = remaining(state.last_rollback_time, cooldown, now)
    return StatusRow(feature, state, None, dwell, cooldown, timing_from, dwell_left, cooldown_left)


def status_json(rows: Sequence[StatusRow]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2)


def status_table(rows: Sequence[StatusRow]) -> Table:
    table = Table("feature", "percent", "enabled", "audience", "paused", "last change")
    table.add_column("dwell left")
    table.add_column("cooldown left")
    table.add_column("overrides")
    for row in rows:
        table.add_row(*(Text(cell) for cell in _status_cells(row)))
    return table


def _status_cells(row: StatusRow) -> list[str]:
    state = row.state
    if state is None:
        return [row.feature, "error (see below)", "", "", "", "", "", "", ""]
    percent = format_percent(state.percent) if state.exists else "unset (0%)"
    change = "never"
    if state.last_change_time is not None:
        since = "" if state.last_percent is None else f" from {format_percent(state.last_percent)}"
        change = f"{format_time(state.last_change_time)}{since}"
    return [
        row.feature,
        percent,
        "yes" if state.enabled else "no",
        "internal" if state.internal_only else "public",
        "paused" if state.paused else "no",
        change,
        _left(row.dwell_remaining),
        _left(row.cooldown_remaining),
        overrides_cell(row.overrides),
    ]


def overrides_cell(overrides: Sequence[tuple[str, str, bool]], shown: int = 3) -> str:
    """`workspace acme on, actor u-1 off, +2 more`; "none" without overrides."""
    cells = [f"{kind} {unit} {'on' if is_on else 'off'}" for kind, unit, is_on in overrides]
    more = len(cells) - shown
    return ", ".join(cells[:shown]) + (f", +{more} more" if more > 0 else "") or "none"


def _left(left: timedelta) -> str:
    return format_duration(left) if left else "ready"


def audit_json(entries: Sequence[AuditEntry]) -> str:
    return json.dumps([entry.to_json() for entry in entries], indent=2)


def audit_table(entries: Sequence[AuditEntry], verbose: bool = False) -> Table:
    """The audit trail; `verbose` adds each controller decision's recorded inputs."""
    from rollout_core.decision_inputs import describe_inputs

    table = Table("time", "feature", "change", "action", "by", "reason")
    if verbose:
        table.add_column("id")
        table.add_column("inputs")
    for entry in entries:
        reason = f"{entry.reason} ({entry.problem})" if entry.problem else entry.reason
        # free text folded to one line: no escape sequence reaches the terminal, and bytes
        # that were not UTF-8 show as a space rather than failing the print
        free = (one_line(text) for text in (entry.subject, entry.action, entry.by, reason))
        feature, action, by, reason = free
        cells = [format_time(entry.time), feature, entry.change, action, by, reason]
        shown = "\n".join(one_line(line) for line in describe_inputs(entry.inputs).splitlines())
        extra = (entry.id or "", shown) if verbose else ()
        table.add_row(*(Text(cell) for cell in (*cells, *extra)))
    return table


def set_message(feature: str, before: str | None, target: float, result: ApplyResult) -> str:
    """`before` is the raw percent string read (None: absent); a corrupt one is shown quoted."""
    if result.unknown:
        return f"{feature}: {result.message}"
    if result.conflict:
        now = "unset" if result.current_percent is None else format_percent(result.current_percent)
        paused = "true" if result.current_paused else "false"
        why = f" ({result.message})" if result.message else ""
        return (
            f"{feature}: not changed: the flag changed while this command ran{why} (now {now}, "
            f"paused={paused}); nothing written; check `rollout status {feature}` and retry"
        )
    if not result.applied:
        return (
            f"{feature}: already at {format_percent(target)}; nothing written (--rewrite writes "
            "it again, e.g. to end a lost-write hold)"
        )
    if before is not None and parse_percent_value(before) == target:
        change = "rewrote "  # --rewrite at the percent it held: a newer write, same percent
    else:
        change = f"{_shown_raw(before)} -> " if before is not None else "set to "
    text = f"{feature}: {change}{format_percent(target)} (audit {result.audit_id})"
    return text + _written_note(result, "; ")


def _shown_raw(raw: str) -> str:
    value = parse_percent_value(raw)
    return format_percent(value) if value is not None else f"{raw!r} (unparsable)"


def _written_note(result: WriteResult | ApplyResult, separator: str = " (") -> str:
    """What the operator must know of an applied write: read back after a lost reply, or
    "applied, unconfirmed: ..." (no replica acknowledged it; a failover now could lose it)."""
    if not (result.recovered or result.unconfirmed):
        return ""
    return f"{separator}{result.message}{')' if separator == ' (' else ''}"


def init_message(feature: str, result: WriteResult) -> str:
    if result.unknown:
        return f"{feature}: {result.message}"
    if not result.is_change:
        return f"{feature}: already initialised; nothing written"
    seeded = " ".join(f"{field}={SEED[field]}" for field in result.written)
    others = "" if len(result.written) == len(SEED) else " (the other seed keys were already set)"
    return f"{feature}: initialised {seeded}{others}{_written_note(result)}"


def pause_message(feature: str, paused: bool, result: WriteResult) -> str:
    if result.unknown:
        return f"{feature}: {result.message}"
    verb = "paused" if paused else "resumed"
    if not result.is_change:
        return f"{feature}: already {verb}; nothing written"
    if paused:
        return (
            f"{feature}: paused; the controller makes no change until `rollout resume {feature}`"
            f"{_written_note(result)}"
        )
    return f"{feature}: resumed; the controller may change the percent again{_written_note(result)}"


def audience_message(feature: str, internal_only: bool, result: WriteResult) -> str:
    if result.unknown:
        return f"{feature}: {result.message}"
    audience = "internal" if internal_only else "public"
    if not result.is_change:
        return f"{feature}: audience already {audience}; nothing written"
    if result.recovered:
        return f"{feature}: audience {audience}; rollout_percent -> 0%{_written_note(result)}"
    old = "unset" if result.old_percent is None else format_percent(result.old_percent)
    return f"{feature}: audience {audience}; rollout_percent {old} -> 0%"
