"""The audit trail: the `rollout:audit` Redis stream is the durable record; the Markdown log
(`rollout_log.md`) is a readable copy that can always be rebuilt from it.

Dry-run entries are recommendations (`recommend 0% -> 10% ... dry_run=true`), never changes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis

from rollout_core.errors import InvalidFlagValue
from rollout_core.flags import AUDIT_STREAM, format_time, parse_percent, parse_time
from rollout_core.model import format_percent
from rollout_core.redis_connection import store_error

__all__ = [
    "DEFAULT_LOG_PATH",
    "MARKDOWN_HEADER",
    "AuditEntry",
    "append_log_entry",
    "append_rollout_log",
    "entry_from_stream",
    "format_log_line",
    "has_control_characters",
    "log_audited_write",
    "log_path",
    "one_line",
    "read_audit",
    "read_entry",
    "rebuild_rollout_log",
    "render_markdown",
]

DEFAULT_LOG_PATH = "rollout_log.md"
MARKDOWN_HEADER = (
    "# Rollout log\n\n"
    "One line per flag change, oldest first. Lines marked `dry_run=true` are recommendations\n"
    "that were not applied. The Redis stream `rollout:audit` is the durable record.\n\n"
)
_PERCENT_ACTIONS = {"promote", "rollback", "hold", ""}  # others (pause, init...) are named
_PAGE = 500


@dataclass(frozen=True)
class AuditEntry:
    """One audited event; percents are None where the percent key was absent."""

    time: datetime
    feature: str
    old_percent: float | None
    new_percent: float | None
    reason: str
    by: str
    dry_run: bool = False
    action: str = ""
    id: str | None = None  # the stream entry id
    old_raw: str = ""  # old_percent as the stream holds it: shows a repaired typo as it was
    segment: str = ""  # the segment of a segmented feature's change ("" for the feature)
    new_raw: str = ""  # new_percent as the stream holds it
    # what is malformed in the entry (e.g. a foreign XADD's time); "" for a well-formed one.
    # A malformed entry is still shown (its time then comes from its stream id), never dropped
    problem: str = ""
    inputs: str = ""  # the controller's decision inputs, compact JSON (rollout explain)

    @property
    def subject(self) -> str:
        """`google`, or `google[eu-west]` for a segment's entry."""
        return f"{self.feature}[{self.segment}]" if self.segment else self.feature

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": format_time(self.time),
            "feature": self.feature,
            "old_percent": self.old_percent,
            "new_percent": self.new_percent,
            "reason": self.reason,
            "by": self.by,
            "dry_run": self.dry_run,
            "action": self.action,
            "old_percent_raw": self.old_raw,
            **({"segment": self.segment} if self.segment else {}),
            "new_percent_raw": self.new_raw,
            "problem": self.problem,
            "inputs": self.inputs or None,
        }

    @property
    def change(self) -> str:
        """`0% -> 10%`; an unparsable percent as the stream holds it, quoted; dry runs read
        `recommend 0% -> 10%`."""
        old, new = (
            repr(raw) if percent is None and raw else _shown(percent)
            for percent, raw in ((self.old_percent, self.old_raw), (self.new_percent, self.new_raw))
        )
        return f"recommend {old} -> {new}" if self.dry_run else f"{old} -> {new}"


def entry_from_stream(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    """Parse one stream entry, never refusing it: a time that does not parse (a foreign or
    hand-written entry) is taken from the stream id, and `problem` names the entry and field."""

    def percent(name: str) -> float | None:
        # an entry may carry an operator's unparsable percent (a pause of a broken flag): the
        # trail must stay readable, so such a value shows as unset rather than failing it
        raw = fields.get(name, "")
        try:
            return parse_percent(f"{AUDIT_STREAM} {entry_id} {name}", raw) if raw else None
        except InvalidFlagValue:
            return None

    problem = ""
    try:
        at = parse_time(f"{AUDIT_STREAM} {entry_id} time", fields.get("time", ""))
    except InvalidFlagValue as error:
        at, problem = _time_of_id(entry_id), f"malformed: {error}; time from the entry id"
    return AuditEntry(
        time=at,
        feature=fields.get("feature", ""),
        old_percent=percent("old_percent"),
        new_percent=percent("new_percent"),
        reason=fields.get("reason", ""),
        by=fields.get("by", ""),
        dry_run=fields.get("dry_run") == "true",
        action=fields.get("action", ""),
        id=entry_id,
        old_raw=fields.get("old_percent", ""),
        segment=fields.get("segment", ""),
        new_raw=fields.get("new_percent", ""),
        problem=problem,
        inputs=fields.get("inputs", ""),
    )


def _time_of_id(entry_id: str) -> datetime:
    """When Redis added the entry: the milliseconds of its stream id."""
    millis, _, _ = entry_id.partition("-")
    try:
        return datetime.fromtimestamp(int(millis) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def read_audit(
    client: redis.Redis,
    feature: str | None = None,
    limit: int | None = 50,
    segment: str | None = None,
) -> list[AuditEntry]:
    """The newest `limit` entries (all when None), newest first, of one feature or all (and
    of one of its segments when `segment` is given)."""
    entries: list[AuditEntry] = []
    try:
        for entry_id, fields in _newest_first(client):
            if segment is not None and fields.get("segment") != segment:
                continue
            if feature is None or fields.get("feature") == feature:
                entries.append(entry_from_stream(entry_id, fields))
                if limit is not None and len(entries) >= limit:
                    break
    except redis.RedisError as exc:
        raise store_error(client, exc, f"reading {AUDIT_STREAM}") from exc
    return entries


def _newest_first(client: redis.Redis) -> Iterator[tuple[str, dict[str, str]]]:
    newest = "+"
    while True:
        page = cast(
            "list[tuple[str, dict[str, str]]]",  # decode_responses=True: str, not bytes
            client.xrevrange(AUDIT_STREAM, max=newest, min="-", count=_PAGE),
        )
        yield from page
        if len(page) < _PAGE:
            return
        newest = f"({page[-1][0]}"


def format_log_line(entry: AuditEntry) -> str:
    """`2025-10-08T15:00:00Z  google  0% -> 10%  reason=...  by=...`, the original format;
    dry runs read `recommend 0% -> 10% ... dry_run=true`, other actions end `action=pause`."""
    feature, reason, by = (one_line(text) for text in (entry.subject, entry.reason, entry.by))
    line = f"{format_time(entry.time)}  {feature}  {entry.change}  reason={reason}  by={by}"
    if entry.dry_run:
        line += "  dry_run=true"
    if entry.action not in _PERCENT_ACTIONS:
        line += f"  action={one_line(entry.action)}"
    if entry.problem:
        line += f"  ({entry.problem})"
    return line


def has_control_characters(text: str) -> bool:
    """True when `text` holds a newline, an escape, a bidi override or another character that
    could make one audit field read as several lines or as other text."""
    return any(_is_control(char) for char in text)


def one_line(text: str) -> str:
    """One entry, one line: control characters (newlines, escapes, bidi overrides) and runs of
    whitespace fold to one space, so no field can forge another log line."""
    visible = "".join(" " if _is_control(char) else char for char in text)
    return " ".join(visible.split())


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in _CONTROL_CATEGORIES


_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _shown(percent: float | None) -> str:
    return "unset" if percent is None else format_percent(percent)


def render_markdown(entries: Iterable[AuditEntry]) -> str:
    """The whole Markdown log for these entries, oldest first whatever order they come in."""
    ordered = sorted(entries, key=lambda e: (e.time, _stream_order(e.id)))
    return MARKDOWN_HEADER + "".join(f"{format_log_line(entry)}\n" for entry in ordered)


def _stream_order(entry_id: str | None) -> tuple[int, int]:
    millis, _, sequence = (entry_id or "0-0").partition("-")
    return int(millis), int(sequence or 0)


def read_entry(client: redis.Redis, entry_id: str) -> AuditEntry | None:
    """The stream entry with this id, or None when it is gone (trimmed)."""
    try:
        found = cast(
            "list[tuple[str, dict[str, str]]]",
            client.xrange(AUDIT_STREAM, min=entry_id, max=entry_id),
        )
    except redis.RedisError as exc:
        raise store_error(client, exc, f"reading {AUDIT_STREAM} {entry_id}") from exc
    return entry_from_stream(*found[0]) if found else None


def log_path(path: str | Path | None = None) -> Path:
    """`path`, else rollout_log.md. The caller passes the configured path (Settings'
    `audit_log_path`, from ROLLOUT_AUDIT_LOG); nothing here reads the environment."""
    return Path(path or DEFAULT_LOG_PATH)


def append_log_entry(entry: AuditEntry, path: str | Path | None = None) -> str:
    """Append one audited entry's line to the Markdown log (with a header when the file is
    new); the line. Every audited write (set, pause, resume, audience, init, override, the
    controller's changes) gets one."""
    line = format_log_line(entry)
    file = log_path(path)
    is_new = not file.exists() or file.stat().st_size == 0
    with file.open("a", encoding="utf-8") as log:
        log.write((MARKDOWN_HEADER if is_new else "") + line + "\n")
    return line


def log_audited_write(
    client: redis.Redis, entry_id: str | None, path: str | Path | None = None
) -> str | None:
    """Append the Markdown line of the stream entry an audited write just made (e.g.
    `WriteResult.audit_id`, `ApplyResult.audit_id`); the line, or None when there was no entry.
    Raises FlagStoreError or OSError; the change itself stands either way, so callers report
    a failure here as a warning."""
    if entry_id is None:
        return None
    entry = read_entry(client, entry_id)
    return None if entry is None else append_log_entry(entry, path)


def append_rollout_log(
    feature: str,
    old_pct: float | None,
    new_pct: float | None,
    reason: str,
    by: str = "manual",
    *,
    dry_run: bool = False,
    at: datetime | None = None,
    path: str | Path | None = None,
) -> str:
    """Append one line to the Markdown log (with a header when the file is new); the line."""
    entry = AuditEntry(at or datetime.now(UTC), feature, old_pct, new_pct, reason, by, dry_run)
    return append_log_entry(entry, path)


def rebuild_rollout_log(client: redis.Redis, path: str | Path | None = None) -> int:
    """Rewrite the Markdown log from the whole stream; the number of entries written."""
    entries = read_audit(client, limit=None)
    file = log_path(path)
    partial = file.with_name(f".{file.name}.tmp")
    partial.write_text(render_markdown(entries), encoding="utf-8")
    partial.replace(file)  # readers never see half a file
    return len(entries)
