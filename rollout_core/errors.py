"""One exception tree for the rollout controller.

    RolloutError
    ├── ConfigError            bad configuration or input: the user must fix something (exit 2)
    │   ├── InvalidFeatureName
    │   └── InvalidFlagValue   a flag key in Redis holds a value that does not parse
    ├── FlagStoreError         Redis unreachable or failing (exit 1)
    └── MetricsUnavailable     Prometheus cannot answer at all (retryable, exit 1)

An SLO breach is a verdict, never an exception; a compare-and-set conflict is a result; a
query that Prometheus refuses is a `QueryError` on that SLO's reading (rollout_core.model).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlagStoreError",
    "InvalidFeatureName",
    "InvalidFlagValue",
    "MetricsUnavailable",
    "RolloutError",
]


class RolloutError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RolloutError):
    """Configuration or user input is wrong; the message names the value and the fix."""


class InvalidFeatureName(ConfigError):
    """A feature name would not make a safe Redis key."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"feature name {name!r} is invalid; expected ^[a-z0-9][a-z0-9_.-]{{0,63}}$ "
            "(lower-case letters, digits, '_', '.', '-'; at most 64 characters)"
        )
        self.name = name


class FlagStoreError(RolloutError):
    """The flag store (Redis) could not be read or written."""


class InvalidFlagValue(ConfigError):
    """A flag key holds a value that does not parse; the feature holds until it is fixed."""

    def __init__(self, key: str, value: str, expected: str) -> None:
        super().__init__(f"{key} is {_shown(value)}; expected {expected}")
        self.key, self.value, self.expected = key, value, expected


def _shown(value: str) -> str:
    """The value quoted; bytes that are not UTF-8 (read as lone surrogates) shown as bytes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{value.encode('utf-8', 'surrogateescape')!r} (not UTF-8)"
    return repr(value)


class MetricsUnavailable(RolloutError):
    """Prometheus could not answer (connection refused, timeout, 5xx): retry, never read as 0."""
