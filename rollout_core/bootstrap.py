"""The one place that reads the environment and wires the real adapters.

The shell asks `current_adapters()`; the offline demo and tests swap in their own with
`use_adapters(...)` (a context variable, so nothing is patched and runs stay isolated).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from rollout_core.errors import ConfigError
from rollout_core.ports import FlagStore, MetricsSource, TelemetrySink

__all__ = [
    "Adapters",
    "Settings",
    "current_adapters",
    "parse_bool_env",
    "use_adapters",
    "wire",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool_env(name: str, raw: str | None) -> bool | None:
    """`true/false/1/0/yes/no/on/off` (any case); None when unset or empty."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} is {raw!r}; expected true or false")


@dataclass(frozen=True)
class Settings:
    """Connection settings from the environment (see docs/usage.md for each variable)."""

    redis_url: str | None = None  # None: REDIS_URL or redis://127.0.0.1:6379/0
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout: float = 10.0
    pushgateway_url: str = ""  # empty: telemetry is off, with a warning per run
    dry_run: bool | None = None  # ROLLOUT_DRY_RUN; None means unset (the flow then dry-runs)
    # ROLLOUT_FETCH_BACKOFF_SECONDS: first gap between SLO fetch retries (then x2, x4)
    fetch_backoff_seconds: float = 0.5
    # ROLLOUT_SCHEDULE_INTERVAL_SECONDS: the deployment's interval; runs later than two of
    # them are skipped as stale
    schedule_interval_seconds: float = 600.0
    # ROLLOUT_AUDIT_LOG: the Markdown copy of the audit stream
    audit_log_path: str = "rollout_log.md"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            prometheus_url=env.get("PROMETHEUS_BASE_URL") or cls.prometheus_url,
            prometheus_timeout=_seconds_env(env, "PROMETHEUS_TIMEOUT_SECONDS", 10.0),
            pushgateway_url=env.get("PUSHGATEWAY_URL", ""),
            dry_run=parse_bool_env("ROLLOUT_DRY_RUN", env.get("ROLLOUT_DRY_RUN")),
            fetch_backoff_seconds=_seconds_env(
                env, "ROLLOUT_FETCH_BACKOFF_SECONDS", 0.5, allow_zero=True
            ),
            schedule_interval_seconds=_seconds_env(env, "ROLLOUT_SCHEDULE_INTERVAL_SECONDS", 600.0),
            audit_log_path=env.get("ROLLOUT_AUDIT_LOG") or cls.audit_log_path,
        )


def _seconds_env(
    env: Mapping[str, str], name: str, default: float, allow_zero: bool = False
) -> float:
    """A number of seconds from the environment; ConfigError naming the variable if bad."""
    raw = env.get(name, "")
    if raw.strip() == "":
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        expected = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ConfigError(f"{name} is {raw!r}; expected {expected}")
    return seconds


@dataclass(frozen=True)
class Adapters:
    """The real or substitute parts one controller run talks to."""

    store: FlagStore
    source: MetricsSource
    telemetry: TelemetrySink
    redis: Any = None  # the client behind the store, for commands that need it directly


_override: ContextVar[Adapters | None] = ContextVar("rollout_adapters", default=None)


def wire(settings: Settings) -> Adapters:
    """Real adapters: Redis flag store, Prometheus source, Pushgateway telemetry."""
    from rollout_core.flags import RedisFlagStore
    from rollout_core.redis_connection import connect
    from rollout_core.slo import PrometheusSource
    from rollout_core.telemetry import PushgatewayTelemetry

    client = connect(settings.redis_url)
    return Adapters(
        store=RedisFlagStore(client),
        source=PrometheusSource(settings.prometheus_url, timeout=settings.prometheus_timeout),
        telemetry=PushgatewayTelemetry(settings.pushgateway_url, redis_client=client),
        redis=client,
    )


def current_adapters(settings: Settings | None = None) -> Adapters:
    """The adapters in force: an override set with `use_adapters`, else the real ones."""
    override = _override.get()
    if override is not None:
        return override
    return wire(settings or Settings.from_env())


@contextmanager
def use_adapters(adapters: Adapters) -> Iterator[Adapters]:
    """Run the controller against these adapters (the demo, tests) within the block."""
    token = _override.set(adapters)
    try:
        yield adapters
    finally:
        _override.reset(token)
