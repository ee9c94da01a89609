"""The Redis edge: timeouts, a small retry budget for reads, no retry at all for writes, and
redis-py errors turned into FlagStoreError messages that never show a password.

The URL comes from the caller (`rollout_core.bootstrap.Settings.redis_target()`); nothing
here reads the environment. A `redis+sentinel://host:port,host:port/service/db` URL gives a
client on the Sentinels' current master that follows a failover, and so do its copies.
Writes are never retried blindly: a compare-and-set whose reply was
lost would see its own write as a conflict, so writes go through `without_retries(client)`
and an interrupted write is read back on a `fresh_client` instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from rollout_core.errors import ConfigError, FlagStoreError
from rollout_core.urls import redact_url
from rollout_sdk.sentinel import is_sentinel_url, master_client

__all__ = [
    "CONNECT_TIMEOUT_SEC",
    "DEFAULT_REDIS_URL",
    "RETRIES",
    "SOCKET_TIMEOUT_SEC",
    "WAIT_TIMEOUT_MS",
    "confirm_replicated",
    "connect",
    "database_of",
    "describe",
    "fresh_client",
    "store_error",
    "without_retries",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CONNECT_TIMEOUT_SEC = 2.0
SOCKET_TIMEOUT_SEC = 5.0
# redis-py retries 10 times by default (about 3.7 s on a refused connection); two retries
# ride out a blip in a read without making an outage look like a hang. Writes get none.
RETRIES = 2
# how long a write waits for one replica to acknowledge it (WAIT 1 <ms>) when replicas exist
WAIT_TIMEOUT_MS = 1000


def database_of(url: str) -> int:
    """The database a redis://, rediss:// or unix:// URL names, as redis-py reads it (a
    `?db=` query wins over the path; none: 0). One that is not a number is a ConfigError
    naming REDIS_URL: redis-py would silently use database 0."""
    parts = urlsplit(url)
    db_text = "" if parts.scheme == "unix" else unquote(parts.path).strip("/")
    db_text = parse_qs(parts.query).get("db", [db_text])[0]
    if db_text and not db_text.isdigit():
        raise ConfigError(
            f"REDIS_URL is {redact_url(url)!r}: database {db_text!r} is not a number; expected "
            "redis://[user:password@]host:port/DB, e.g. redis://127.0.0.1:6379/0"
        )
    return int(db_text or 0)


def connect(url: str | None = None) -> redis.Redis:
    """A client for `url` (None: the local default); nothing is sent until used."""
    url = url or DEFAULT_REDIS_URL
    if not is_sentinel_url(url):
        database_of(url)
    options = {
        "decode_responses": True,
        # an operator's stray byte (`redis-cli SET k $'\xff'`) is a corrupt value of that
        # key, never a UnicodeDecodeError out of the pass: it decodes to a lone surrogate,
        # which no parser accepts, and encodes back to the same bytes, so a compare-and-set
        # compares it exactly and an audit entry records it as it was
        "encoding_errors": "surrogateescape",
        "socket_connect_timeout": CONNECT_TIMEOUT_SEC,
        "socket_timeout": SOCKET_TIMEOUT_SEC,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), RETRIES),
    }
    try:
        if is_sentinel_url(url):
            return master_client(url, **options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL {redact_url(url)!r} is not a Redis URL ({exc}); "
            "expected redis://[:password@]host:port/db or "
            "redis+sentinel://host:port,host:port/service/db"
        ) from None


def _copy(client: redis.Redis, retry: Retry | None) -> redis.Redis:
    """A client with its own connection pool on the same server and settings."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if retry is not None:
        kwargs["retry"] = retry
    if isinstance(pool, SentinelConnectionPool):  # a copy that follows the master too
        kwargs.pop("connection_pool", None)  # the old pool's proxy; the new pool makes its own
        sentinel_pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            pool.service_name,
            pool.sentinel_manager,
            connection_class=pool.connection_class,
            is_master=pool.is_master,
            check_connection=pool.check_connection,
            **kwargs,
        )
        return redis.Redis(connection_pool=sentinel_pool)
    fresh_pool = type(pool)(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=fresh_pool)


def without_retries(client: redis.Redis) -> redis.Redis:
    """A client for writes: same server and timeouts, but a lost reply is never resent."""
    return _copy(client, Retry(NoBackoff(), 0))


def fresh_client(client: redis.Redis) -> redis.Redis:
    """A client on new connections (keeping the read retry budget), to read back after a
    write whose connection failed."""
    return _copy(client, None)


def describe(client: redis.Redis) -> str:
    """The client's redacted URL, rebuilt from its connection settings."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    auth = ":****@" if kwargs.get("password") else ""
    if kwargs.get("username"):
        auth = f"{kwargs['username']}:****@" if kwargs.get("password") else f"{kwargs['username']}@"
    if isinstance(pool, SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        hosts = ",".join(_host_port(sentinel) for sentinel in sentinels)
        db = kwargs.get("db", 0)
        protected = any(s.connection_pool.connection_kwargs.get("password") for s in sentinels)
        query = "?sentinel_password=****" if protected else ""
        return f"redis+sentinel://{auth}{hosts}/{pool.service_name}/{db}{query}"
    if kwargs.get("path"):
        return f"unix://{auth}{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{auth}{host}:{port}/{db}"


def store_error(client: redis.Redis, exc: Exception, doing: str) -> FlagStoreError:
    """A FlagStoreError saying what failed, where (redacted) and what to do about it."""
    where = describe(client)
    pool = client.connection_pool
    if isinstance(exc, MasterNotFoundError) and isinstance(pool, SentinelConnectionPool):
        reason = _no_master(pool)
        return FlagStoreError(
            f"Redis through the Sentinels at {where} failed while {doing}: {reason}"
        )
    detail = _hide_passwords(client, str(exc).rstrip("."))
    if isinstance(exc, redis.AuthenticationError):
        advice = "check the password in REDIS_URL"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        advice = "is redis-server running there? check REDIS_URL"
    else:
        advice = "check the server log and REDIS_URL"
    return FlagStoreError(f"Redis at {where} failed while {doing}: {detail}; {advice}")


def _no_master(pool: SentinelConnectionPool) -> str:
    """Why the Sentinels named no master, asked of each again (they fail fast): none answers,
    they do not monitor the service (naming those they do), or its master is down. Never
    redis-py's message, which embeds the repr of every Sentinel client."""
    service = pool.service_name
    monitored: set[str] = set()
    failures: list[str] = []
    for sentinel in pool.sentinel_manager.sentinels:
        try:
            monitored.update(sentinel.sentinel_masters())
        except redis.RedisError as exc:
            failures.append(f"{_host_port(sentinel)}: {_hide_passwords(sentinel, str(exc))}")
    if len(failures) == len(pool.sentinel_manager.sentinels):
        return (
            f"no Sentinel answered ({'; '.join(failures)}); check REDIS_SENTINELS (or the "
            "hosts in REDIS_URL), REDIS_SENTINEL_PASSWORD if they require one, and that the "
            "Sentinels are running"
        )
    if service not in monitored:
        names = ", ".join(sorted(monitored)) or "none"
        return (
            f"the Sentinels do not monitor {service!r} (they monitor: {names}); set "
            "REDIS_SENTINEL_SERVICE (or the service in REDIS_URL) to one of those"
        )
    return (
        f"the Sentinels know {service!r} but name no master that is up (it is down, or a "
        "failover is under way); retry in a few seconds, or ask them: "
        f"`redis-cli -p PORT SENTINEL MASTERS`"
    )


def _host_port(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _hide_passwords(client: redis.Redis, text: str) -> str:
    """`text` with the client's password, and the Sentinels' when it follows them, as ****."""
    pool = client.connection_pool
    secrets = [pool.connection_kwargs.get("password")]
    if isinstance(pool, SentinelConnectionPool):
        sentinels = pool.sentinel_manager.sentinels
        secrets += [s.connection_pool.connection_kwargs.get("password") for s in sentinels]
    for secret in filter(None, secrets):
        text = text.replace(str(secret), "****")
    return text


def confirm_replicated(
    client: redis.Redis, timeout_ms: int = WAIT_TIMEOUT_MS, replication: Any = None
) -> bool | None:
    """After a write on this client's connection pool: None when the server has no replica
    (nothing to wait for), else whether one replica acknowledged within `timeout_ms`
    (`WAIT 1 <timeout>`). Through Sentinel a master always has replicas to wait for: none
    connected is an unconfirmed write, not "nothing to wait for". WAIT covers every earlier
    write of its connection (the pool hands the last one back), so one call confirms a batch.
    A Redis error is an unconfirmed write, never a raise: the write itself was applied.
    `replication`: the reply of an `INFO replication` sent with the writes (saves a round
    trip), or None to ask here."""
    try:
        if replication is None:
            replication = client.info("replication")
        if isinstance(replication, Exception):
            raise replication
    except redis.ResponseError:
        return None  # a server without INFO (a restricted managed Redis): nothing to tell
    except redis.RedisError:
        return False
    if int(replication.get("connected_slaves", 0) or 0) < 1:
        return False if isinstance(client.connection_pool, SentinelConnectionPool) else None
    try:
        return int(client.wait(1, timeout_ms)) >= 1
    except redis.RedisError:
        return False
