"""Pure checks of what the operator typed; each error names the value and the fix (exit 2)."""

from __future__ import annotations

import math

from rollout_core.audit import has_control_characters
from rollout_core.errors import ConfigError
from rollout_sdk.flag_values import PERCENT_EXPECTED, is_servable_percent, parse_percent_value

__all__ = [
    "parse_audience",
    "parse_limit",
    "parse_percent_argument",
    "require_one_line",
    "require_reason",
]

_PERCENT_HINT = f"expected {PERCENT_EXPECTED}"


def parse_percent_argument(text: str) -> float:
    """ "10", "0.5", "10%" or " 10 % "; then the store's and the gate's own parser
    (`rollout_sdk.flag_values`), so "abc", "nan", "1e1", "1_0" and 150 are refused."""
    cleaned = text.strip().removesuffix("%").strip()
    value = parse_percent_value(cleaned)
    if value is not None:
        if not is_servable_percent(value):
            raise ConfigError(
                f"percent {text!r} has more than 2 decimals; the gate serves percents in steps "
                f"of 0.01, so write e.g. {round(value, 2):g}"
            )
        return value
    try:
        number = float(cleaned)
    except ValueError:
        raise ConfigError(f"percent {text!r} is not a number; {_PERCENT_HINT}") from None
    if not math.isfinite(number):
        raise ConfigError(f"percent {text!r} is not a finite number; {_PERCENT_HINT}")
    if not 0 <= number <= 100:
        raise ConfigError(f"percent {text!r} is out of range; {_PERCENT_HINT}")
    raise ConfigError(
        f"percent {text!r} is not a plain decimal (no sign, exponent or '_'); {_PERCENT_HINT}"
    )


def require_reason(reason: str | None, example: str) -> str:
    """The reason, stripped; a change without one is refused, since the audit must say why."""
    if reason is None or not reason.strip():
        raise ConfigError(f"--reason is missing or empty; say why, e.g. {example}")
    return require_one_line(reason.strip(), "--reason")


def require_one_line(text: str, option: str) -> str:
    """`text` unchanged; refused when it holds a newline or another control character, which
    would make one audit entry read as several lines of the Markdown log."""
    if has_control_characters(text):
        raise ConfigError(
            f"{option} {text!r} holds a newline or another control character; write it on "
            "one line of plain text"
        )
    return text


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
