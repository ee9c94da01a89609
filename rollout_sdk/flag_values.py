"""The one parser of the operator's flag values, shared by the gate, the store and the CLI.

What the controller rejects, the gate fails closed on: both read a value through these
functions, so `1e1`, `1_0`, ` 50 ` or `nan` is refused by the store and serves 0% in the gate.
Standard library only: services import it through `rollout_sdk`.
"""

from __future__ import annotations

import re

__all__ = [
    "ENABLE_VALUES",
    "PERCENT_EXPECTED",
    "is_servable_percent",
    "parse_bool_value",
    "parse_env_enabled",
    "parse_percent_value",
]

# ASCII digits with an optional fraction: no sign, exponent, underscore, space, nan or inf,
# and no other script's digits (Python's \d takes "５０"; the Lua scripts' %d does not)
_PERCENT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
PERCENT_EXPECTED = "a number from 0 to 100 such as 10 or 0.5"
# an explicit enable of the env hard kill PROVIDER_<FEATURE>_ENABLED; anything else kills
ENABLE_VALUES = frozenset({"true", "1", "yes", "on"})


def parse_percent_value(text: str) -> float | None:
    """`"10"`, `"10.0"`, `"0.5"` -> the percent; None for anything else (`"1e1"`, `" 50 "`,
    `"1_0"`, `"nan"`, `"150"`)."""
    if not _PERCENT.fullmatch(text):
        return None
    value = float(text)
    return value if 0 <= value <= 100 else None


def is_servable_percent(percent: float) -> bool:
    """True when `percent` is a whole number of the gate's 0.01 steps (its bucket
    granularity): a finer percent cannot be served, nor stored and read back as written."""
    return abs(percent * 100 - round(percent * 100)) <= 1e-6


def parse_bool_value(text: str) -> bool | None:
    """Exactly `"true"` or `"false"`, as operators write them with redis-cli; None otherwise."""
    return {"true": True, "false": False}.get(text)


def parse_env_enabled(raw: str | None) -> bool:
    """The hard kill: unset means enabled; an explicit enable (`true`, `1`, `yes`, `on`, any
    case, surrounding spaces ignored) keeps it on; any other value disables the feature."""
    if raw is None:
        return True
    return raw.strip().lower() in ENABLE_VALUES
