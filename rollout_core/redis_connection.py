"""The Redis edge: timeouts, a small retry budget for reads, no retry at all for writes, and
redis-py errors turned into FlagStoreError messages that never show a password.

The URL comes from the caller (`rollout_core.bootstrap.Settings.redis_url`); nothing here
reads the environment. Writes are never retried blindly: a compare-and-set whose reply was
lost would see its own write as a conflict, so writes go through `without_retries(client)`
and an interrupted write is read back on a `fresh_client` instead.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from rollout_core.errors import ConfigError, FlagStoreError
from rollout_core.urls import redact_url

__all__ = [
    "CONNECT_TIMEOUT_SEC",
    "DEFAULT_REDIS_URL",
    "RETRIES",
    "SOCKET_TIMEOUT_SEC",
    "connect",
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


def connect(url: str | None = None) -> redis.Redis:
    """A client for `url` (None: the local default); nothing is sent until used."""
    url = url or DEFAULT_REDIS_URL
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            # an operator's stray byte (`redis-cli SET k $'\xff'`) is a corrupt value of that
            # key, never a UnicodeDecodeError out of the pass: it decodes to a lone surrogate,
            # which no parser accepts, and encodes back to the same bytes, so a compare-and-set
            # compares it exactly and an audit entry records it as it was
            encoding_errors="surrogateescape",
            socket_connect_timeout=CONNECT_TIMEOUT_SEC,
            socket_timeout=SOCKET_TIMEOUT_SEC,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), RETRIES),
        )
    except ValueError as exc:
        raise ConfigError(
            f"REDIS_URL {redact_url(url)!r} is not a Redis URL ({exc}); "
            "expected redis://[:password@]host:port/db"
        ) from None


def _copy(client: redis.Redis, retry: Retry | None) -> redis.Redis:
    """A client with its own connection pool on the same server and settings."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if retry is not None:
        kwargs["retry"] = retry
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
    kwargs = client.connection_pool.connection_kwargs
    auth = ":****@" if kwargs.get("password") else ""
    if kwargs.get("username"):
        auth = f"{kwargs['username']}:****@"
    if kwargs.get("path"):
        return f"unix://{auth}{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{auth}{host}:{port}/{db}"


def store_error(client: redis.Redis, exc: Exception, doing: str) -> FlagStoreError:
    """A FlagStoreError saying what failed, where (redacted) and what to do about it."""
    where = describe(client)
    detail = str(exc).rstrip(".")
    password = client.connection_pool.connection_kwargs.get("password")
    if password:
        detail = detail.replace(str(password), "****")
    if isinstance(exc, redis.AuthenticationError):
        advice = "check the password in REDIS_URL"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        advice = "is redis-server running there? check REDIS_URL"
    else:
        advice = "check the server log and REDIS_URL"
    return FlagStoreError(f"Redis at {where} failed while {doing}: {detail}; {advice}")
