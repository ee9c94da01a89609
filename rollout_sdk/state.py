"""One feature's answer inputs, built whole from its raw Redis values and the environment.

Pure: no clock, no network. The client builds a FeatureState in its refresher thread and swaps
it in; the request path only reads it. Each bad value fails closed and is named in `problems`:
a bad `enabled` disables, a bad `internal_only` keeps the audience internal, a bad percent is
0%, a bad override (or an overrides key that is not a hash) is ignored, and a hard kill that
is not an explicit enable kills.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rollout_sdk.bucketing import percent_threshold
from rollout_sdk.flag_values import (
    ENABLE_VALUES,
    PERCENT_EXPECTED,
    parse_bool_value,
    parse_env_enabled,
    parse_percent_value,
)
from rollout_sdk.keys import (
    SEGMENT_FALLBACK_FIELD,
    flag_key,
    kill_switch_variable,
    overrides_key,
    percent_variable,
    segment_key,
)

__all__ = [
    "DEFAULT",
    "DISABLED",
    "ERROR",
    "SPLIT",
    "STALE",
    "TARGETING_MATCH",
    "FeatureState",
    "Overrides",
    "RawFlags",
    "feature_state",
    "parse_overrides",
    "parse_segment_list",
    "placeholder_state",
    "unreadable_overrides",
]

# why an answer is what it is (OpenFeature's reason names; see docs/sdk.md)
DISABLED = "DISABLED"  # the hard kill or enabled=false
TARGETING_MATCH = "TARGETING_MATCH"  # an override, or the audience decided
SPLIT = "SPLIT"  # the actor's sticky bucket against the percent
STALE = "STALE"  # the state is older than max_stale: fail closed
ERROR = "ERROR"  # not loaded yet, or a bad value made the feature fail closed
DEFAULT = "DEFAULT"  # the feature was never initialised: off

_OVERRIDE_KINDS = ("actor", "workspace")


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True)
class RawFlags:
    """A feature's values as Redis returned them (bytes or str; None = absent)."""

    enabled: object = None
    internal_only: object = None
    rollout_percent: object = None
    overrides: Mapping[object, object] | Exception = field(default_factory=dict)
    # a segmented feature's flags:{f}:segment_by, :segments, :segment_fallback_percent, and
    # the rollout_percent of each segment read (by segment name)
    segment_by: object = None
    segments: object = None
    segment_fallback: object = None
    segment_percents: Mapping[str, object] = field(default_factory=dict)


def parse_segment_list(raw: object) -> tuple[str, ...]:
    """`"eu-canary,eu-west"` -> ("eu-canary", "eu-west"); absent or empty -> ()."""
    text = _text(raw)
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else ()


@dataclass(frozen=True)
class Overrides:
    """A feature's per-actor and per-workspace overrides (True = on, False = off)."""

    actors: Mapping[str, bool] = field(default_factory=dict)
    workspaces: Mapping[str, bool] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.actors or self.workspaces)

    def rows(self) -> list[tuple[str, str, bool]]:
        """(kind, id, on) sorted for display: workspaces first, then actors."""
        return [("workspace", w, on) for w, on in sorted(self.workspaces.items())] + [
            ("actor", a, on) for a, on in sorted(self.actors.items())
        ]


def parse_overrides(feature: str, raw: Mapping[object, object]) -> Overrides:
    """The overrides hash (`workspace:<id>` / `actor:<id>` -> "true" | "false"); a field or
    value that does not parse is skipped and named in `problems`."""
    found: dict[str, dict[str, bool]] = {kind: {} for kind in _OVERRIDE_KINDS}
    problems: list[str] = []
    for raw_field, raw_value in raw.items():
        name, value = _text(raw_field) or "", _text(raw_value) or ""
        kind, _, unit = name.partition(":")
        on = parse_bool_value(value)
        if kind not in found or not unit or on is None:
            problems.append(
                f'{overrides_key(feature)} field {name!r} = {value!r}; expected "workspace:<id>" '
                'or "actor:<id>" set to "true" or "false" (use `rollout override`); ignored'
            )
            continue
        found[kind][unit] = on
    return Overrides(found["actor"], found["workspace"], tuple(problems))


def unreadable_overrides(feature: str, error: object) -> Overrides:
    """The overrides when Redis refused to read the hash (a WRONGTYPE: the key written as a
    string by hand): none apply, and the key is named in `problems`."""
    return Overrides(
        problems=(
            f"{overrides_key(feature)} cannot be read as a hash ({error}); its overrides are "
            f"ignored until it is deleted (`redis-cli DEL {overrides_key(feature)}`) and set "
            "again with `rollout override`",
        )
    )


class FeatureState:
    """One feature's answer inputs, never mutated after it is built.

    An off feature (killed, disabled, not loaded) is encoded as internal-only with nobody
    bucketed in and no overrides, so the request path needs no check of its own for it.
    """

    __slots__ = (
        "actor_overrides",
        "enabled",
        "exists",
        "feature",
        "fixed_answer",
        "internal_only",
        "killed",
        "loaded",
        "overrides",
        "percent",
        "prefix",
        "problems",
        "read_at",
        "segment_attribute",
        "segment_by",
        "segment_percents",
        "segment_thresholds",
        "stale_until",
        "threshold",
        "workspace_overrides",
    )

    def __init__(
        self,
        feature: str,
        *,
        read_at: float,
        max_stale: float,
        killed: bool = False,
        enabled: bool = True,
        internal_only: bool = True,
        percent: float = 0.0,
        overrides: Overrides | None = None,
        exists: bool = False,
        loaded: bool = True,
        problems: tuple[str, ...] = (),
        segment_by: tuple[str, ...] | None = None,
        segment_percents: Mapping[str, float] | None = None,
    ) -> None:
        is_off = killed or not enabled or not loaded
        self.feature = feature
        self.read_at = read_at  # monotonic time taken before the read that built it
        self.stale_until = read_at + max_stale  # then the client fails closed
        self.killed = killed
        self.enabled = enabled
        self.loaded = loaded
        self.exists = exists
        self.problems = problems
        self.percent = 0.0 if is_off else percent
        self.threshold = percent_threshold(self.percent)  # buckets below it are in
        self.internal_only = is_off or internal_only
        # the answer for every eligible actor when the bucket does not matter (0% or 100%)
        self.fixed_answer: bool | None = None
        if is_off or self.threshold == 0:
            self.fixed_answer = False
        elif self.percent >= 100:
            self.fixed_answer = True
        self.prefix = f"{feature}:"
        # segmented: the context attribute(s) pick the segment's threshold; `percent` and
        # `threshold` are then the fallback's (a context without them or with another value)
        self.segment_by = segment_by
        # one attribute (the usual case): the request path looks its value up directly
        self.segment_attribute = segment_by[0] if segment_by and len(segment_by) == 1 else None
        self.segment_percents: Mapping[str, float] = {
            name: 0.0 if is_off else value for name, value in (segment_percents or {}).items()
        }
        self.segment_thresholds: dict[object, int] = {
            name: percent_threshold(value) for name, value in self.segment_percents.items()
        }
        if segment_by is not None and not is_off:
            self.fixed_answer = None
        self.overrides = None if is_off or not overrides else overrides
        self.actor_overrides = self.overrides.actors if self.overrides else {}
        self.workspace_overrides = self.overrides.workspaces if self.overrides else {}

    def segment_of(self, get: Callable[[str], object]) -> str | None:
        """The context's segment name (`eu-west`, `eu-west.free`); None without the
        attribute(s)."""
        assert self.segment_by is not None
        parts = []
        for attribute in self.segment_by:
            value = get(attribute)
            if value is None or value == "":
                return None
            parts.append(f"{value}")
        return ".".join(parts)

    def segment_threshold(self, get: Callable[[str], object]) -> int:
        """The context's segment's threshold, or the fallback's for an unknown segment."""
        if self.segment_attribute is not None:
            return self.segment_thresholds.get(get(self.segment_attribute), self.threshold)
        segment = self.segment_of(get)
        return self.segment_thresholds.get(segment, self.threshold) if segment else self.threshold

    def segment_percent(self, get: Callable[[str], object]) -> float:
        """The context's segment's percent, or the fallback's (as `segment_threshold`)."""
        if self.segment_attribute is not None:
            value = get(self.segment_attribute)
            found = self.segment_percents.get(value) if isinstance(value, str) else None
            return self.percent if found is None else found
        segment = self.segment_of(get)
        return self.segment_percents.get(segment, self.percent) if segment else self.percent

    def override_for(self, actor: object, workspace: object) -> bool | None:
        """The actor's override, else its workspace's, else None (no override applies)."""
        if actor is not None and actor != "":
            on = self.actor_overrides.get(f"{actor}")
            if on is not None:
                return on
        if workspace is not None and workspace != "":
            return self.workspace_overrides.get(f"{workspace}")
        return None


def placeholder_state(feature: str) -> FeatureState:
    """A feature first seen at request time: off until the refresher has read it."""
    return FeatureState(feature, read_at=0.0, max_stale=math.inf, loaded=False)


def feature_state(
    feature: str, raw: RawFlags, environ: Mapping[str, str], read_at: float, max_stale: float
) -> FeatureState:
    """The state the client serves, failing closed on each bad value (see the module doc)."""
    problems: list[str] = []
    variable = kill_switch_variable(feature)
    kill_value = environ.get(variable)
    killed = not parse_env_enabled(kill_value)
    if killed:
        explicit = sorted(ENABLE_VALUES)
        problems.append(
            f"{variable}={kill_value!r} is not an explicit enable ({', '.join(explicit)}, any "
            f"case): {feature} is killed in this process"
        )
    enabled = _boolean(flag_key(feature, "enabled"), raw.enabled, True, False, problems)
    internal_only = _boolean(
        flag_key(feature, "internal_only"), raw.internal_only, False, True, problems
    )
    percent_text, source = _text(raw.rollout_percent), flag_key(feature, "rollout_percent")
    if percent_text is None:
        percent_text, source = environ.get(percent_variable(feature)), percent_variable(feature)
    percent = 0.0 if percent_text is None else parse_percent_value(percent_text)
    if percent is None:
        problems.append(
            f"{source} is {percent_text!r}; expected {PERCENT_EXPECTED}; "
            f"{feature} serves 0% until it is fixed"
        )
        percent = 0.0
    if isinstance(raw.overrides, Exception):
        overrides = unreadable_overrides(feature, raw.overrides)
    else:
        overrides = parse_overrides(feature, raw.overrides)
    problems += overrides.problems
    segment_by: tuple[str, ...] | None = None
    segment_percents: dict[str, float] = {}
    by_text = _text(raw.segment_by)
    if by_text:
        segment_by = tuple(part.strip() for part in by_text.split(",") if part.strip())
        percent = _segment_percent(
            flag_key(feature, SEGMENT_FALLBACK_FIELD), raw.segment_fallback, problems
        )
        for segment in parse_segment_list(raw.segments):
            key = segment_key(feature, segment, "rollout_percent")
            segment_percents[segment] = _segment_percent(
                key, raw.segment_percents.get(segment), problems
            )
    return FeatureState(
        feature,
        read_at=read_at,
        max_stale=max_stale,
        killed=killed,
        enabled=enabled,
        internal_only=internal_only,
        percent=percent,
        overrides=overrides,
        exists=raw.rollout_percent is not None or segment_by is not None,
        problems=tuple(problems),
        segment_by=segment_by,
        segment_percents=segment_percents,
    )


def _segment_percent(key: str, raw: object, problems: list[str]) -> float:
    """A segment's (or the fallback's) percent: absent is 0%, a bad value is 0% and named."""
    text = _text(raw)
    if text is None:
        return 0.0
    value = parse_percent_value(text)
    if value is None:
        problems.append(f"{key} is {text!r}; expected {PERCENT_EXPECTED}; serving 0% there")
        return 0.0
    return value


def _boolean(key: str, raw: object, absent: bool, bad: bool, problems: list[str]) -> bool:
    text = _text(raw)
    if text is None:
        return absent
    value = parse_bool_value(text)
    if value is None:
        problems.append(f'{key} is {text!r}; expected "true" or "false"; failing closed')
        return bad
    return value
