"""The flag store on Redis: DESIGN §4 keys, read in one round trip, changed by atomic Lua.

Operators keep writing plain strings with `redis-cli SET flags:google:paused "true"`; every
value is parsed strictly, and one that does not parse is an InvalidFlagValue naming the key.
Percent changes go through one compare-and-set script; init, pause and audience through one
audited-write script. Both append to the `rollout:audit` stream in the same atomic step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import redis

from rollout_core.config import FEATURE_NAME_PATTERN, validate_feature_name
from rollout_core.errors import ConfigError, InvalidFlagValue, RolloutError
from rollout_core.model import Action, FlagState
from rollout_core.ports import ApplyResult, FlagChange
from rollout_core.redis_connection import store_error

__all__ = [
    "AUDIT_STREAM",
    "FIELDS",
    "SEED",
    "RedisFlagStore",
    "WriteResult",
    "flag_key",
    "format_percent_value",
    "format_time",
    "parse_bool",
    "parse_flag_state",
    "parse_percent",
    "parse_time",
]

AUDIT_STREAM = "rollout:audit"
FIELDS = (
    "enabled",
    "internal_only",
    "rollout_percent",
    "paused",
    "last_change_time",
    "last_percent",
    "last_rollback_time",
)
_PERCENT = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# what `init` writes where absent: a new feature goes to internal actors first, at 0%
SEED = {"enabled": "true", "internal_only": "true", "rollout_percent": "0", "paused": "false"}


def flag_key(feature: str, field: str) -> str:
    return f"flags:{feature}:{field}"


def parse_bool(key: str, raw: str) -> bool:
    if raw in ("true", "false"):
        return raw == "true"
    raise InvalidFlagValue(key, raw, '"true" or "false"')


def parse_percent(key: str, raw: str) -> float:
    """A finite decimal in 0..100; "10", "10.0" and "0.5" parse, "abc", "nan", "1e1" do not."""
    if _PERCENT.fullmatch(raw) and 0 <= float(raw) <= 100:
        return float(raw)
    raise InvalidFlagValue(key, raw, "a number from 0 to 100 such as 10 or 0.5")


def parse_time(key: str, raw: str) -> datetime:
    """ISO-8601, returned in UTC; a time without an offset is read as UTC."""
    try:
        if not _ISO_TIME.match(raw):
            raise ValueError(raw)
        at = datetime.fromisoformat(raw)
    except ValueError:
        expected = "an ISO-8601 UTC time such as 2025-10-08T15:00:00Z"
        raise InvalidFlagValue(key, raw, expected) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def format_percent_value(percent: float) -> str:
    """The canonical stored form: "10", "0.5", never "10.0" nor "1e-05"."""
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ConfigError(f"percent {percent!r} is out of range; expected a number from 0 to 100")
    return f"{percent:.6f}".rstrip("0").rstrip(".")


def format_time(at: datetime) -> str:
    """`2025-10-08T15:00:00Z`; a naive time is taken to be UTC already."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_flag_state(feature: str, raw: Mapping[str, str | None]) -> FlagState:
    """A FlagState from the raw values by field name (None = absent), parsing each strictly."""

    def value(field: str) -> tuple[str, str | None]:
        return flag_key(feature, field), raw.get(field)

    def boolean(field: str, default: bool) -> bool:
        key, text = value(field)
        return default if text is None else parse_bool(key, text)

    def moment(field: str) -> datetime | None:
        key, text = value(field)
        return None if text is None else parse_time(key, text)

    percent_key, percent = value("rollout_percent")
    last_key, last = value("last_percent")
    return FlagState(
        feature=feature,
        percent=0.0 if percent is None else parse_percent(percent_key, percent),
        enabled=boolean("enabled", True),
        internal_only=boolean("internal_only", False),
        paused=boolean("paused", False),
        last_change_time=moment("last_change_time"),
        last_percent=None if last is None else parse_percent(last_key, last),
        last_rollback_time=moment("last_rollback_time"),
        exists=percent is not None,
    )


@dataclass(frozen=True)
class WriteResult:
    """What an audited write did: the fields it wrote (none: already so) and the percents."""

    written: tuple[str, ...]
    audit_id: str | None
    old_percent: float | None
    new_percent: float | None

    @property
    def is_change(self) -> bool:
        return bool(self.written)


@cache
def _script(name: str) -> str:
    return (resources.files("rollout_core") / "lua" / name).read_text(encoding="utf-8")


class RedisFlagStore:
    """The FlagStore port on Redis, plus the operator's audited writes."""

    def __init__(self, client: redis.Redis, *, audit_retention: int = 100_000) -> None:
        self._client = client
        self.audit_retention = audit_retention  # the store's engineer trims the stream by it
        self._cas = client.register_script(_script("cas_percent.lua"))
        self._audited_write = client.register_script(_script("audited_write.lua"))

    @property
    def client(self) -> redis.Redis:
        return self._client

    def read(self, features: Sequence[str]) -> dict[str, FlagState]:
        states = self.read_each(features)
        for state in states.values():
            if isinstance(state, RolloutError):
                raise state
        return {feature: state for feature, state in states.items() if isinstance(state, FlagState)}

    def read_each(self, features: Sequence[str]) -> dict[str, FlagState | RolloutError]:
        names = [validate_feature_name(feature) for feature in features]
        keys = [flag_key(feature, field) for feature in names for field in FIELDS]
        values = self._call("reading flags", self._client.mget, keys) if keys else []
        states: dict[str, FlagState | RolloutError] = {}
        width = len(FIELDS)
        for index, feature in enumerate(names):
            raw = dict(zip(FIELDS, values[index * width : (index + 1) * width], strict=True))
            try:
                states[feature] = parse_flag_state(feature, raw)
            except RolloutError as exc:
                states[feature] = exc
        return states

    def known_features(self) -> list[str]:
        """Every feature with a rollout_percent key, found with SCAN (never KEYS), sorted."""
        pattern = flag_key("*", "rollout_percent")
        keys: list[str] = self._call(
            "listing features", lambda: list(self._client.scan_iter(match=pattern, count=1000))
        )
        names = (key[len("flags:") : -len(":rollout_percent")] for key in keys)
        return sorted({name for name in names if FEATURE_NAME_PATTERN.fullmatch(name)})

    def apply(self, change: FlagChange) -> ApplyResult:
        keys, args = self._cas_call(change)
        reply = self._call(
            f"applying {change.feature} {change.expected_percent} -> {change.new_percent}",
            self._cas,
            keys,
            args,
        )
        return _apply_result(keys[0], reply)

    def apply_many(self, changes: Sequence[FlagChange]) -> list[ApplyResult | RolloutError]:
        """Every change's compare-and-set in one pipelined round trip (plus one SCRIPT EXISTS).

        Not a transaction: each script is atomic on its own, so a conflict or a bad value in
        one feature leaves the others' writes alone. When the connection fails mid-way the
        features are reported failed; any script Redis ran wrote its audit entry with its
        flag, so the stream says which did happen and the next run reads the truth.
        """
        if not changes:
            return []
        calls = [self._cas_call(change) for change in changes]
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            self._cas(keys, args, client=pipe)
        doing = f"applying {len(changes)} change(s) ({', '.join(c.feature for c in changes)})"
        replies = self._call(doing, pipe.execute, False)
        results: list[ApplyResult | RolloutError] = []
        for (keys, _), change, reply in zip(calls, changes, replies, strict=True):
            if isinstance(reply, redis.RedisError):
                results.append(store_error(self._client, reply, f"applying {change.feature}"))
            else:
                results.append(_apply_result(keys[0], reply))
        return results

    def _cas_call(self, change: FlagChange) -> tuple[list[str], list[str]]:
        feature = validate_feature_name(change.feature)
        fields = ("rollout_percent", "paused", "last_percent", "last_change_time")
        keys = [*(flag_key(feature, f) for f in (*fields, "last_rollback_time")), AUDIT_STREAM]
        expected = change.expected_percent
        args = [
            "" if expected is None else repr(float(expected)),  # exact: compared numerically
            _text(change.expected_paused),
            format_percent_value(change.new_percent),
            format_percent_value(expected or 0.0),
            format_time(change.at),
            _text(change.dry_run),
            feature,
            change.reason,
            change.by,
            str(change.action),
        ]
        return keys, args

    def set_percent(
        self, feature: str, percent: float, reason: str, by: str = "manual", *, at: datetime
    ) -> ApplyResult:
        """A manual change through the controller's compare-and-set: read, then apply.

        Already at `percent`: nothing is written (applied and conflict both False, no audit id).
        """
        feature = validate_feature_name(feature)
        target = float(format_percent_value(percent))
        keys = [flag_key(feature, "rollout_percent"), flag_key(feature, "paused")]
        raw_percent, raw_paused = self._call(f"reading {feature}", self._client.mget, keys)
        current = None if raw_percent is None else parse_percent(keys[0], raw_percent)
        paused = raw_paused is not None and parse_bool(keys[1], raw_paused)
        if current == target:
            return ApplyResult(False, False, current, paused)
        action = Action.PROMOTE if target > (current or 0.0) else Action.ROLLBACK
        return self.apply(FlagChange(feature, current, paused, target, reason, by, at, action))

    def init(self, feature: str, at: datetime, by: str = "manual") -> WriteResult:
        """Seed enabled=true, internal_only=true, rollout_percent=0, paused=false where absent."""
        return self._write(feature, "nx", SEED, "init", "initialised", by, at)

    def set_paused(
        self, feature: str, paused: bool, reason: str, by: str, at: datetime
    ) -> WriteResult:
        action = "pause" if paused else "resume"
        return self._write(feature, "set", {"paused": _text(paused)}, action, reason, by, at)

    def set_audience(
        self, feature: str, internal_only: bool, reason: str, by: str, at: datetime
    ) -> WriteResult:
        """Switch internal_only and reset the percent to 0 together; same audience: no-op."""
        values = {"internal_only": _text(internal_only), "rollout_percent": "0"}
        return self._write(feature, "switch", values, "audience", reason, by, at)

    def _write(
        self,
        feature: str,
        mode: str,
        values: Mapping[str, str],
        action: str,
        reason: str,
        by: str,
        at: datetime,
    ) -> WriteResult:
        feature = validate_feature_name(feature)
        history = ("rollout_percent", "last_percent", "last_change_time")
        keys = [AUDIT_STREAM, *(flag_key(feature, f) for f in (*history, *values))]
        args = [mode, format_time(at), feature, reason, by, action, *values.values()]
        reply = self._call(f"writing {action} of {feature}", self._audited_write, keys, args)
        audit_id, old, new, *written = reply
        return WriteResult(
            written=tuple(key.rpartition(":")[2] for key in written),
            audit_id=audit_id or None,
            old_percent=_percent_or_none(old),
            new_percent=_percent_or_none(new),
        )

    def _call(self, doing: str, command: Any, *args: Any) -> Any:
        try:
            return command(*args)
        except redis.RedisError as exc:
            raise store_error(self._client, exc, doing) from exc


def _apply_result(percent_key: str, reply: Sequence[str]) -> ApplyResult:
    status, current, paused, audit_id = reply
    return ApplyResult(
        applied=status == "applied",
        conflict=status == "conflict",
        current_percent=parse_percent(percent_key, current) if current else None,
        current_paused=paused == "true",
        audit_id=audit_id or None,
    )


def _percent_or_none(raw: str) -> float | None:
    """For reporting only: the write is done, so a stray operator value must not raise now."""
    return float(raw) if _PERCENT.fullmatch(raw) else None


def _text(flag: bool) -> str:
    return "true" if flag else "false"
