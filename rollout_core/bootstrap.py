"""The one place that reads the environment and wires the real adapters.

`Settings.from_env()` reads every variable the controller knows (pydantic-settings) and turns
a bad value into a ConfigError naming the variable, the value and the fix. `wire(settings)`
hands each adapter its settings explicitly; no adapter reads `os.environ` itself. The shell
asks `current_adapters()`; the offline demo and tests swap in their own with
`use_adapters(...)` (a context variable, so nothing is patched and runs stay isolated).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from rollout_core.errors import ConfigError
from rollout_core.ports import FlagStore, MetricsSource, TelemetrySink

__all__ = [
    "DEFAULT_AUDIT_RETENTION",
    "DEFAULT_BRIDGE_MAX_BODY_BYTES",
    "DEFAULT_REDIS_URL",
    "Adapters",
    "Settings",
    "current_adapters",
    "error_telemetry",
    "parse_bool_env",
    "use_adapters",
    "wire",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AUDIT_RETENTION = 100_000
DEFAULT_BRIDGE_MAX_BODY_BYTES = 256 * 1024  # Alertmanager sends a few KiB per group
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


def _seconds(name: str, raw: Any, *, allow_zero: bool) -> float:
    """A number of seconds; ConfigError naming the variable when it is not one."""
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        expected = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ConfigError(f"{name} is {raw!r}; expected {expected}")
    return seconds


_environ: ContextVar[Mapping[str, str] | None] = ContextVar("rollout_environ", default=None)


class _MappingSource(EnvSettingsSource):
    """Environment variables from a given mapping instead of os.environ (tests, from_env)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class Settings(BaseSettings):
    """Everything the controller reads from the environment (docs/usage.md lists each one).

    Unset or empty variables take the defaults. Validators raise ConfigError themselves, so a
    bad value never surfaces as a pydantic traceback.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )
    variables: ClassVar[dict[str, str]] = {}  # field name -> environment variable, filled below

    redis_url: str = Field(default=DEFAULT_REDIS_URL, validation_alias="REDIS_URL")
    # Sentinel addressing: host:port,host:port and the monitored master's name; when set, the
    # controller and the CLI reach the master through the Sentinels (REDIS_URL then lends its
    # user, password and database, and must not name other Sentinels or another service)
    redis_sentinels: str = Field(default="", validation_alias="REDIS_SENTINELS")
    redis_sentinel_service: str = Field(default="", validation_alias="REDIS_SENTINEL_SERVICE")
    # the Sentinels' own password (`requirepass` in sentinel.conf), sent to them only
    redis_sentinel_password: str = Field(
        default="", validation_alias="REDIS_SENTINEL_PASSWORD", repr=False
    )
    # remember the audit id of each change in a Prefect Variable, so the next run (on any
    # worker) refuses a Redis that lost it in a failover; off unless set
    write_memory: bool = Field(default=False, validation_alias="ROLLOUT_WRITE_MEMORY")
    # WAIT 1 <ms> after each flag write, when the master has replicas
    redis_wait_timeout_ms: int = Field(default=1000, validation_alias="ROLLOUT_REDIS_WAIT_MS")
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", validation_alias="PROMETHEUS_BASE_URL"
    )
    prometheus_timeout: float = Field(default=10.0, validation_alias="PROMETHEUS_TIMEOUT_SECONDS")
    # empty: telemetry is off, with a warning per run
    pushgateway_url: str = Field(default="", validation_alias="PUSHGATEWAY_URL")
    pushgateway_username: str = Field(default="", validation_alias="PUSHGATEWAY_USERNAME")
    pushgateway_password: str = Field(
        default="", validation_alias="PUSHGATEWAY_PASSWORD", repr=False
    )
    # None means unset: the flow then dry-runs (live is deliberate)
    dry_run: bool | None = Field(default=None, validation_alias="ROLLOUT_DRY_RUN")
    # first gap between SLO fetch retries (then x2, x4)
    fetch_backoff_seconds: float = Field(
        default=0.5, validation_alias="ROLLOUT_FETCH_BACKOFF_SECONDS"
    )
    audit_log_path: str = Field(default="rollout_log.md", validation_alias="ROLLOUT_AUDIT_LOG")
    # the audit stream keeps about this many entries (XADD MAXLEN ~)
    audit_retention: int = Field(
        default=DEFAULT_AUDIT_RETENTION, validation_alias="ROLLOUT_AUDIT_RETENTION"
    )

    # the alert bridge (`rollout alert-bridge`): the bearer token Alertmanager sends (empty:
    # the bridge refuses to start) and the largest request body it reads
    bridge_token: str = Field(default="", validation_alias="ROLLOUT_BRIDGE_TOKEN", repr=False)
    bridge_max_body_bytes: int = Field(
        default=DEFAULT_BRIDGE_MAX_BODY_BYTES, validation_alias="ROLLOUT_BRIDGE_MAX_BODY_BYTES"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (default: the process environment)."""
        token = _environ.set(environ)
        try:
            return cls()
        finally:
            _environ.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment (or the mapping given to from_env) only: no .env file or secrets
        directory is read behind the operator's back."""
        environ = _environ.get()
        if environ is None:
            return init_settings, env_settings
        return init_settings, _MappingSource(settings_cls, environ)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, raw: Any) -> str:
        scheme = urlsplit(str(raw)).scheme
        if scheme == "redis+sentinel":
            from rollout_sdk.sentinel import parse_sentinel_url

            try:
                parse_sentinel_url(str(raw))
            except ValueError as exc:
                raise ConfigError(f"REDIS_URL: {exc}") from None
        elif scheme in ("redis", "rediss", "unix"):
            from rollout_core.redis_connection import database_of

            database_of(str(raw))  # a db that is not a number: ConfigError naming REDIS_URL
        else:
            from rollout_core.urls import redact_url

            raise ConfigError(
                f"REDIS_URL is {redact_url(str(raw))!r}; expected redis://[:password@]host:port/db "
                "(or rediss://, unix://, redis+sentinel://host:port,host:port/service/db)"
            )
        return str(raw)

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinels(cls, raw: Any) -> str:
        text = str(raw).replace(" ", "")
        expected = "expected host:port,host:port (e.g. 127.0.0.1:26379,127.0.0.1:26380)"
        addresses = [address for address in text.split(",") if address]
        if text and not addresses:
            raise ConfigError(f"REDIS_SENTINELS is {raw!r}: it names no Sentinel; {expected}")
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(
                    f"REDIS_SENTINELS is {raw!r}: {address!r} is not host:port; {expected}"
                )
        return ",".join(addresses)

    @field_validator("redis_sentinel_service", mode="before")
    @classmethod
    def _sentinel_service(cls, raw: Any) -> str:
        from rollout_sdk.sentinel import SERVICE_PATTERN

        text = str(raw).strip()
        if text and not SERVICE_PATTERN.fullmatch(text):
            raise ConfigError(
                f"REDIS_SENTINEL_SERVICE is {raw!r}; expected the master name the Sentinels "
                "monitor (`sentinel monitor NAME ...`: letters, digits and . - _), e.g. rollout"
            )
        return text

    @field_validator("write_memory", mode="before")
    @classmethod
    def _write_memory(cls, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        return bool(parse_bool_env("ROLLOUT_WRITE_MEMORY", raw))

    @field_validator("redis_wait_timeout_ms", mode="before")
    @classmethod
    def _wait_ms(cls, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
            raise ConfigError(
                f"ROLLOUT_REDIS_WAIT_MS is {raw!r}; expected a positive whole number of "
                "milliseconds a write waits for a replica (default 1000)"
            )
        return int(text)

    def redis_target(self) -> str:
        """The URL the controller and CLI connect to: REDIS_URL, or, with REDIS_SENTINELS set,
        a redis+sentinel:// URL for REDIS_SENTINEL_SERVICE with REDIS_URL's user, password and
        db. Where REDIS_URL itself is a redis+sentinel:// URL naming other Sentinels or another
        service, the two disagree on where the flags are: a ConfigError naming both.
        REDIS_SENTINEL_PASSWORD goes to the Sentinels (the URL's sentinel_password)."""
        from rollout_sdk.sentinel import (
            SentinelAddress,
            is_sentinel_url,
            parse_sentinel_url,
            sentinel_url,
        )

        sentinel_password = self.redis_sentinel_password or None
        if not self.redis_sentinels:
            if not is_sentinel_url(self.redis_url) or sentinel_password is None:
                return self.redis_url
            address = parse_sentinel_url(self.redis_url)
            hosts = ",".join(f"{host}:{port}" for host, port in address.sentinels)
            service = address.service
        else:
            if not self.redis_sentinel_service:
                raise ConfigError(
                    f"REDIS_SENTINELS is {self.redis_sentinels!r} but REDIS_SENTINEL_SERVICE is "
                    "unset; set it to the master name the Sentinels monitor (e.g. rollout)"
                )
            hosts, service = self.redis_sentinels, self.redis_sentinel_service
            if is_sentinel_url(self.redis_url):
                address = parse_sentinel_url(self.redis_url)
                self._require_same_sentinels(address)
            else:
                db, username, password = self._database_and_credentials()
                address = SentinelAddress((), service, db, password, username)
        if address.sentinel_password and sentinel_password not in (None, address.sentinel_password):
            raise ConfigError(
                "REDIS_URL's sentinel_password and REDIS_SENTINEL_PASSWORD differ; keep one of "
                "them (the Sentinels have one password)"
            )
        return sentinel_url(
            hosts,
            service,
            address.db,
            address.password,
            address.username,
            sentinel_password or address.sentinel_password,
        )

    def _require_same_sentinels(self, address: Any) -> None:
        """REDIS_URL (a redis+sentinel:// URL, what services read) and REDIS_SENTINELS /
        REDIS_SENTINEL_SERVICE (what the controller and CLI use) must name the same master."""
        from rollout_core.urls import redact_url

        shown = redact_url(self.redis_url)
        unset = (
            "or unset REDIS_SENTINELS and REDIS_SENTINEL_SERVICE so that REDIS_URL alone "
            "addresses Redis"
        )
        if address.service != self.redis_sentinel_service:
            raise ConfigError(
                f"REDIS_URL {shown!r} names the Sentinel service {address.service!r} but "
                f"REDIS_SENTINEL_SERVICE is {self.redis_sentinel_service!r}: services reading "
                f"REDIS_URL and the controller would use different masters; make them agree, "
                f"{unset}"
            )
        listed = {
            (host, int(port))
            for host, _, port in (a.rpartition(":") for a in self.redis_sentinels.split(","))
        }
        if set(address.sentinels) != listed:
            raise ConfigError(
                f"REDIS_URL {shown!r} names other Sentinels than REDIS_SENTINELS "
                f"{self.redis_sentinels!r}: services reading REDIS_URL and the controller "
                f"could find different masters; list the same Sentinels in both, {unset}"
            )

    def _database_and_credentials(self) -> tuple[int, str | None, str | None]:
        """(db, username, password) of a redis://, rediss:// or unix:// REDIS_URL, as
        redis-py reads them (a `?db=` query wins over the path)."""
        from urllib.parse import unquote

        from rollout_core.redis_connection import database_of

        parts = urlsplit(self.redis_url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return database_of(self.redis_url), username, password

    @field_validator("prometheus_url", "pushgateway_url", mode="before")
    @classmethod
    def _http_url(cls, raw: Any, info: Any) -> str:
        parts = urlsplit(str(raw))
        if str(raw) and (parts.scheme not in ("http", "https") or not parts.hostname):
            from rollout_core.urls import redact_url

            name = cls.variables[info.field_name]
            raise ConfigError(
                f"{name} is {redact_url(str(raw))!r}; expected an http(s) URL "
                "such as http://127.0.0.1:9090"
            )
        return str(raw)

    @field_validator("prometheus_timeout", mode="before")
    @classmethod
    def _timeout(cls, raw: Any) -> float:
        return _seconds("PROMETHEUS_TIMEOUT_SECONDS", raw, allow_zero=False)

    @field_validator("fetch_backoff_seconds", mode="before")
    @classmethod
    def _backoff(cls, raw: Any) -> float:
        return _seconds("ROLLOUT_FETCH_BACKOFF_SECONDS", raw, allow_zero=True)

    @field_validator("dry_run", mode="before")
    @classmethod
    def _dry_run(cls, raw: Any) -> bool | None:
        return (
            raw if isinstance(raw, bool) or raw is None else parse_bool_env("ROLLOUT_DRY_RUN", raw)
        )

    @field_validator("audit_retention", mode="before")
    @classmethod
    def _retention(cls, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
            raise ConfigError(
                f"ROLLOUT_AUDIT_RETENTION is {raw!r}; expected a positive whole number of "
                f"audit entries to keep (default {DEFAULT_AUDIT_RETENTION})"
            )
        return int(text)

    @field_validator("bridge_max_body_bytes", mode="before")
    @classmethod
    def _max_body(cls, raw: Any) -> int:
        text = str(raw).strip()
        if isinstance(raw, bool) or not text.isdigit() or int(text) < 1024:
            raise ConfigError(
                f"ROLLOUT_BRIDGE_MAX_BODY_BYTES is {raw!r}; expected a whole number of bytes "
                f"of 1024 or more (default {DEFAULT_BRIDGE_MAX_BODY_BYTES})"
            )
        return int(text)

    def pushgateway_target(self) -> str:
        """The Pushgateway URL with PUSHGATEWAY_USERNAME/PASSWORD folded in as its credentials
        (the telemetry adapter splits them off again; they never reach a log line)."""
        if not self.pushgateway_url or not self.pushgateway_username:
            return self.pushgateway_url
        parts = urlsplit(self.pushgateway_url)
        if parts.username is not None:  # credentials in the URL win
            return self.pushgateway_url
        user = quote(self.pushgateway_username, safe="")
        password = quote(self.pushgateway_password, safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


Settings.variables.update(
    {name: str(field.validation_alias) for name, field in Settings.model_fields.items()}
)


@dataclass(frozen=True)
class Adapters:
    """The real or substitute parts one controller run talks to."""

    store: FlagStore
    source: MetricsSource
    telemetry: TelemetrySink
    redis: Any = None  # the client behind the store, for commands that need it directly


_override: ContextVar[Adapters | None] = ContextVar("rollout_adapters", default=None)


def wire(settings: Settings) -> Adapters:
    """Real adapters: Redis flag store, Prometheus source, Pushgateway telemetry. A bad URL
    raises ConfigError here, so callers wire inside their configuration-error handling."""
    from rollout_core.flags import RedisFlagStore
    from rollout_core.redis_connection import connect, without_retries
    from rollout_core.slo import PrometheusSource
    from rollout_core.telemetry import PushgatewayTelemetry

    client = connect(settings.redis_target())
    return Adapters(
        store=RedisFlagStore(
            client,
            audit_retention=settings.audit_retention,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        ),
        source=PrometheusSource(settings.prometheus_url, timeout=settings.prometheus_timeout),
        # no client retries: a lost reply of the totals' write must reach the sink's marker
        # check, never be resent by redis-py (that would count the run twice)
        telemetry=PushgatewayTelemetry(
            settings.pushgateway_target(), redis_client=without_retries(client)
        ),
        redis=client,
    )


def error_telemetry(environ: Mapping[str, str] | None = None) -> TelemetrySink | None:
    """A telemetry sink for a run that failed on its configuration, wired from whatever part
    of the environment is valid, so runs_total{status="error"} still counts it. With a bad
    REDIS_URL the totals come from the Pushgateway's own copy (the sink's Redis fallback).
    None when the Pushgateway settings themselves are bad: nothing can be pushed."""
    import os

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from rollout_core.redis_connection import connect, without_retries
    from rollout_core.telemetry import PushgatewayTelemetry

    env = os.environ if environ is None else environ
    gateway_names = ("PUSHGATEWAY_URL", "PUSHGATEWAY_USERNAME", "PUSHGATEWAY_PASSWORD")
    try:
        gateway = Settings.from_env({name: env[name] for name in gateway_names if name in env})
    except ConfigError:
        return None
    client: redis.Redis
    try:
        redis_names = (
            "REDIS_URL",
            "REDIS_SENTINELS",
            "REDIS_SENTINEL_SERVICE",
            "REDIS_SENTINEL_PASSWORD",
        )
        redis_env = {name: env[name] for name in redis_names if name in env}
        client = connect(Settings.from_env(redis_env).redis_target())
    except ConfigError:
        # nowhere to connect: every command fails at once, and the sink falls back
        client = redis.Redis(
            unix_socket_path="/nonexistent/rollout-redis", retry=Retry(NoBackoff(), 0)
        )
    return PushgatewayTelemetry(gateway.pushgateway_target(), redis_client=without_retries(client))


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
