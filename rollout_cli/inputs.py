"""Pure checks of what the operator typed; each error names the value and the fix (exit 2)."""

from __future__ import annotations

import math

from rollout_core.errors import ConfigError

__all__ = ["parse_audience", "parse_limit", "parse_percent_argument", "require_reason"]

_PERCENT_HINT = "expected a number from 0 to 100 such as 10 or 0.5"


def parse_percent_argument(text: str) -> float:
    """ "10", "0.5" or "10%"; "abc", "nan", "inf" and 150 are refused."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise ConfigError(f"percent {text!r} is not a number; {_PERCENT_HINT}") from None
    if not math.isfinite(value):
        raise ConfigError(f"percent {text!r} is not a finite number; {_PERCENT_HINT}")
    if not 0 <= value <= 100:
        raise ConfigError(f"percent {text!r} is out of range; {_PERCENT_HINT}")
    return value


def require_reason(reason: str | None, example: str) -> str:
    """The reason, stripped; a change without one is refused, since the audit must say why."""
    if reason is None or not reason.strip():
        raise ConfigError(f"--reason is missing or empty; say why, e.g. {example}")
    return reason.strip()


def parse_audience(text: str) -> bool:
    """`internal` -> internal_only true, `public` -> false."""
    audience = text.strip().lower()
    if audience not in ("internal", "public"):
        raise ConfigError(f"audience {text!r} is invalid; expected internal or public")
    return audience == "internal"


def parse_limit(limit: int) -> int:
    if limit < 1:
        raise ConfigError(f"--limit {limit} is invalid; expected a whole number of 1 or more")
    return limit
