"""The write side of per-workspace and per-actor overrides: one audited Lua script that sets
or clears a field of `flags:{f}:overrides`, appends to `rollout:audit` and publishes the change
notice, atomically. Services read the hash through `rollout_sdk` (docs/sdk.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

import redis

from rollout_core.config import validate_feature_name
from rollout_core.errors import ConfigError
from rollout_core.flags import format_time
from rollout_core.redis_connection import store_error
from rollout_sdk.keys import AUDIT_STREAM, CHANGES_CHANNEL, flag_key, overrides_key
from rollout_sdk.state import Overrides, parse_overrides

__all__ = ["OVERRIDE_KINDS", "OverrideResult", "read_overrides", "write_override"]

OVERRIDE_KINDS = ("workspace", "actor")
_UNIT = re.compile(r"^[^\s\x00-\x1f]{1,200}$")


@dataclass(frozen=True)
class OverrideResult:
    """What `write_override` did: the value before and after (None: no override)."""

    written: bool
    old: bool | None
    new: bool | None
    audit_id: str | None


@cache
def _script_text() -> str:
    return (resources.files("rollout_core") / "lua" / "override.lua").read_text(encoding="utf-8")


def validate_unit(kind: str, unit: str) -> str:
    """A workspace or actor id as the services pass it: 1-200 characters, no spaces."""
    if kind not in OVERRIDE_KINDS:
        raise ConfigError(f"override kind {kind!r} is invalid; expected workspace or actor")
    if not _UNIT.fullmatch(unit):
        raise ConfigError(
            f"--{kind} {unit!r} is invalid; expected the {kind} id your service passes as "
            f"{kind}_id (1-200 characters, no spaces)"
        )
    return unit


def write_override(
    client: redis.Redis,
    feature: str,
    kind: str,
    unit: str,
    on: bool | None,
    reason: str,
    by: str,
    at: datetime,
) -> OverrideResult:
    """Set (`on` True/False) or clear (None) one override, audited; a feature that is not
    initialised is a ConfigError and nothing is written."""
    feature = validate_feature_name(feature)
    unit = validate_unit(kind, unit)
    value = "" if on is None else ("true" if on else "false")
    shown = "cleared" if on is None else ("on" if on else "off")
    keys = [overrides_key(feature), flag_key(feature, "rollout_percent"), AUDIT_STREAM]
    args = [f"{kind}:{unit}", value, format_time(at), feature, f"{kind} {unit} {shown}: {reason}"]
    args += [by, CHANGES_CHANNEL]
    try:
        status, old, audit_id = client.register_script(_script_text())(keys, args)
    except redis.RedisError as exc:
        raise store_error(client, exc, f"writing the {kind} override of {feature}") from exc
    status, old, audit_id = (_text(v) for v in (status, old, audit_id))
    if status == "not_initialised":
        raise ConfigError(
            f"{feature} is not initialised ({flag_key(feature, 'rollout_percent')} is absent); "
            f"run `rollout init {feature}` first"
        )
    before = None if old == "" else old == "true"
    return OverrideResult(status == "written", before, on, audit_id or None)


def read_overrides(client: redis.Redis, feature: str) -> Overrides:
    """A feature's overrides as the services read them (bad fields are named in `problems`)."""
    feature = validate_feature_name(feature)
    try:
        raw = client.hgetall(overrides_key(feature))
    except redis.RedisError as exc:
        raise store_error(client, exc, f"reading the overrides of {feature}") from exc
    return parse_overrides(feature, raw)  # type: ignore[arg-type]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
