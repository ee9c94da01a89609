"""Redis Sentinel addressing, shared by the SDK, the controller and the CLI (redis + stdlib).

A `redis+sentinel://[:password@]host:port,host:port/service/db` URL names the Sentinels and
the monitored service; the client it gives follows the master through a failover (redis-py's
`Sentinel(...).master_for(service)`). A plain `redis://` URL is left to `Redis.from_url`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelAddress",
    "is_sentinel_url",
    "master_client",
    "parse_sentinel_url",
    "sentinel_url",
]

SENTINEL_SCHEME = "redis+sentinel"
_EXPECTED = "expected redis+sentinel://[:password@]host:port[,host:port...]/service[/db]"


@dataclass(frozen=True)
class SentinelAddress:
    """The Sentinels, the service they monitor, and the database and password on its master."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None
    username: str | None = None

    def redacted(self) -> str:
        auth = ":****@" if self.password else ""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{SENTINEL_SCHEME}://{auth}{hosts}/{self.service}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def sentinel_url(sentinels: str, service: str, db: int = 0, password: str | None = None) -> str:
    """The URL for REDIS_SENTINELS (`host:port,host:port`) and REDIS_SENTINEL_SERVICE."""
    auth = f":{password}@" if password else ""
    return f"{SENTINEL_SCHEME}://{auth}{sentinels.replace(' ', '')}/{service}/{db}"


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{url!r}: Sentinel address {text!r} is not host:port; {_EXPECTED}")
    return host.strip("[]"), int(port)


def parse_sentinel_url(url: str) -> SentinelAddress:
    """The parts of a redis+sentinel:// URL; ValueError naming what is wrong."""
    shown = _redact(url)
    if not is_sentinel_url(url):
        raise ValueError(f"{shown!r} is not a Sentinel URL; {_EXPECTED}")
    rest = url.strip()[len(SENTINEL_SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(part, shown) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError(f"{shown!r} names no Sentinel; {_EXPECTED}")
    service, _, db_text = urlsplit("/" + path).path.strip("/").partition("/")
    if not service:
        raise ValueError(f"{shown!r} names no service (the Sentinels' master name); {_EXPECTED}")
    db_text = db_text.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"{shown!r}: database {db_text!r} is not a number; {_EXPECTED}")
    return SentinelAddress(
        sentinels,
        unquote(service),
        int(db_text),
        unquote(password) or None,
        unquote(username) or None,
    )


def master_client(url: str, **connection_kwargs: Any) -> redis.Redis:
    """A client on the service's current master that finds the new one after a failover.
    `connection_kwargs` (timeouts, retry, decode_responses) apply to the master connections;
    the Sentinels get the same timeouts."""
    address = parse_sentinel_url(url)
    timeouts = {
        name: connection_kwargs[name]
        for name in ("socket_timeout", "socket_connect_timeout")
        if name in connection_kwargs
    }
    # redis-py's Sentinel is untyped
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call]
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        address.service,
        db=address.db,
        password=address.password,
        username=address.username,
        **connection_kwargs,
    )
    return master


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:****@{hosts}"
