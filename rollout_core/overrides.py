"""Per-workspace and per-actor overrides: the store's audited script sets or clears a field of
`flags:{f}:overrides`, appends to `rollout:audit` and publishes the change notice, atomically
(`RedisFlagStore.set_override`). Services read the hash through `rollout_sdk` (docs/sdk.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import redis

from rollout_core.config import validate_feature_name
from rollout_core.errors import ConfigError
from rollout_core.flags import RedisFlagStore, WriteResult
from rollout_core.redis_connection import store_error
from rollout_sdk.keys import overrides_key
from rollout_sdk.state import Overrides, parse_overrides, unreadable_overrides

__all__ = [
    "OVERRIDE_KINDS",
    "OverrideResult",
    "read_all_overrides",
    "read_overrides",
    "write_override",
]

OVERRIDE_KINDS = ("workspace", "actor")
_UNIT = re.compile(r"^[^\s\x00-\x1f]{1,200}$")


@dataclass(frozen=True)
class OverrideResult:
    """What `write_override` did: the value before and after (None: no override)."""

    written: bool
    old: bool | None
    new: bool | None
    audit_id: str | None
    write: WriteResult | None = None  # the store's report: a lost reply, an unknown outcome


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
    store: RedisFlagStore,
    feature: str,
    kind: str,
    unit: str,
    on: bool | None,
    reason: str,
    by: str,
    at: datetime,
) -> OverrideResult:
    """Set (`on` True/False) or clear (None) one override through the store's audited write
    (no blind retry, read back after a lost reply); a feature that is not initialised is a
    FeatureNotInitialised and nothing is written."""
    feature = validate_feature_name(feature)
    unit = validate_unit(kind, unit)
    value = "" if on is None else ("true" if on else "false")
    shown = "cleared" if on is None else ("on" if on else "off")
    why = f"{kind} {unit} {shown}: {reason}"
    result, old = store.set_override(feature, f"{kind}:{unit}", value, why, by, at)
    before = None if old is None else old == "true"
    return OverrideResult(result.is_change, before, on, result.audit_id, result)


def read_overrides(client: redis.Redis, feature: str) -> Overrides:
    """A feature's overrides as the services read them (bad fields are named in `problems`)."""
    feature = validate_feature_name(feature)
    try:
        raw = client.hgetall(overrides_key(feature))
    except redis.ResponseError as exc:  # WRONGTYPE: the key is not a hash
        return unreadable_overrides(feature, exc)
    except redis.RedisError as exc:
        raise store_error(client, exc, f"reading the overrides of {feature}") from exc
    return parse_overrides(feature, raw)  # type: ignore[arg-type]


def read_all_overrides(client: redis.Redis, features: Sequence[str]) -> dict[str, Overrides]:
    """Every named feature's overrides in one pipelined round trip (for `rollout status`)."""
    names = [validate_feature_name(feature) for feature in features]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(overrides_key(name))
    try:  # a wrong-typed key fails only its own feature's overrides
        replies = pipe.execute(raise_on_error=False) if names else []
    except redis.RedisError as exc:
        raise store_error(client, exc, "reading the overrides") from exc
    found = {}
    for name, raw in zip(names, replies, strict=True):
        if isinstance(raw, redis.ResponseError):
            found[name] = unreadable_overrides(name, raw)
        elif isinstance(raw, Exception):
            raise store_error(client, raw, "reading the overrides") from raw
        else:
            found[name] = parse_overrides(name, raw)
    return found
