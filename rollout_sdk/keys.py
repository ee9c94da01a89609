"""The Redis names the controller writes and services read (DESIGN §4), in one place.

Standard library only: the SDK and the controller's store both import these.
"""

from __future__ import annotations

import re

__all__ = [
    "ABORT_EPISODES_HASH",
    "AUDIT_STREAM",
    "CHANGES_CHANNEL",
    "FEATURES_REGISTRY",
    "FEATURE_NAME_PATTERN",
    "GATE_FIELDS",
    "SEGMENTS_FIELD",
    "SEGMENT_BY_FIELD",
    "SEGMENT_FALLBACK_FIELD",
    "SEGMENT_FIELDS",
    "env_token",
    "flag_key",
    "kill_switch_variable",
    "overrides_key",
    "percent_variable",
    "segment_key",
    "split_unit",
    "unit_key",
    "unit_name",
]

AUDIT_STREAM = "rollout:audit"
# every audited write publishes the feature's name here, so clients refresh it within a second
CHANGES_CHANNEL = "rollout:changes"
# a set of every initialised feature, maintained by `rollout init` (and every audited write)
FEATURES_REGISTRY = "rollout:features"
# controller-owned: a hash of alert episodes that already aborted a feature, field
# `<feature>|<alertname>|<fingerprint>|<startsAt>` -> `<time> <audit entry id>`; written by the
# compare-and-set that applied the abort, so a resent alert never aborts twice
ABORT_EPISODES_HASH = "rollout:abort:episodes"
# what a feature may be called (the controller's config validates names with the same pattern)
FEATURE_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# the string keys a service's client reads per feature, in this order (plus the overrides hash)
GATE_FIELDS = ("enabled", "internal_only", "rollout_percent")
# a segmented feature's discovery keys, flags:{feature}:<field>: the context attribute(s)
# ("region", or "region,tier"), the segments in rollout order ("eu-canary,eu-west,us-east"),
# and the percent of a context without the attribute or with another value ("0")
SEGMENT_BY_FIELD = "segment_by"
SEGMENTS_FIELD = "segments"
SEGMENT_FALLBACK_FIELD = "segment_fallback_percent"
# the keys each segment has of its own, flags:{feature}:segment:{segment}:<field>; enabled and
# internal_only stay the feature's, and the feature's paused pauses every segment
SEGMENT_FIELDS = (
    "rollout_percent",
    "paused",
    "last_change_time",
    "last_percent",
    "last_rollback_time",
)


def flag_key(feature: str, field: str) -> str:
    """`flags:{feature}:{field}`, e.g. flags:google:rollout_percent."""
    return f"flags:{feature}:{field}"


def overrides_key(feature: str) -> str:
    """`flags:{feature}:overrides`: a hash of `workspace:<id>` / `actor:<id>` -> "true" | "false"
    (`redis-cli HGETALL flags:google:overrides`), written only by `rollout override`."""
    return f"flags:{feature}:overrides"


def env_token(feature: str) -> str:
    """`gmail.send` -> `GMAIL_SEND`: the feature as environment variable names spell it."""
    return re.sub(r"[^A-Z0-9]", "_", feature.upper())


def kill_switch_variable(feature: str) -> str:
    """`PROVIDER_<FEATURE>_ENABLED`: the hard kill, checked before anything in Redis."""
    return f"PROVIDER_{env_token(feature)}_ENABLED"


def percent_variable(feature: str) -> str:
    """`FLAGS_<FEATURE>_ROLLOUT_PERCENT`: the percent used while the Redis key is absent."""
    return f"FLAGS_{env_token(feature)}_ROLLOUT_PERCENT"


def segment_key(feature: str, segment: str, field: str) -> str:
    """`flags:{feature}:segment:{segment}:{field}`, e.g. flags:google:segment:eu-west:paused."""
    return f"flags:{feature}:segment:{segment}:{field}"


def unit_name(feature: str, segment: str | None) -> str:
    """`google[eu-west]`: how a segment is named in outcomes, tables and the CLI."""
    return feature if segment is None else f"{feature}[{segment}]"


def split_unit(unit: str) -> tuple[str, str | None]:
    """`google[eu-west]` -> ("google", "eu-west"); `google` -> ("google", None)."""
    if unit.endswith("]") and "[" in unit:
        feature, _, segment = unit[:-1].partition("[")
        return feature, segment
    return unit, None


def unit_key(unit: str, field: str) -> str:
    """The key of a feature's or a segment's field: a segment's own fields are under
    `flags:{f}:segment:{s}:`, its `enabled` and `internal_only` are the feature's, and
    `feature_paused` is the feature's `paused`."""
    feature, segment = split_unit(unit)
    if field == "feature_paused":
        return flag_key(feature, "paused")
    if segment is None or field not in SEGMENT_FIELDS:
        return flag_key(feature, field)
    return segment_key(feature, segment, field)
