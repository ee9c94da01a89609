"""Redis Sentinel addressing, shared by the SDK, the controller and the CLI (redis + stdlib).

A `redis+sentinel://[user:password@]host:port,host:port/service/db[?sentinel_password=pw]`
URL names the Sentinels and the monitored service; the client it gives follows the master
through a failover (redis-py's `Sentinel(...).master_for(service)`). The userinfo is the
master's; `sentinel_password` is the Sentinels' own (`requirepass` in sentinel.conf), sent
to them only. The Sentinel connections get the caller's timeouts and retry budget, so a
fail-fast client tries each unreachable Sentinel once. A plain `redis://` URL is left to
`Redis.from_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

__all__ = [
    "SENTINEL_SCHEME",
    "SERVICE_PATTERN",
    "SentinelAddress",
    "is_sentinel_url",
    "master_client",
    "parse_sentinel_url",
    "sentinel_url",
]

SENTINEL_SCHEME = "redis+sentinel"
# Redis: "the master name ... valid charset is A-z 0-9 and the three characters .-_"
SERVICE_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
_EXPECTED = (
    "expected redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]"
    "[?sentinel_password=...]"
)
_QUERY_KEYS = ("sentinel_password",)


@dataclass(frozen=True)
class SentinelAddress:
    """The Sentinels, the service they monitor, the database and credentials on its master,
    and the Sentinels' own password (None: they need none)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None
    username: str | None = None
    sentinel_password: str | None = None

    def redacted(self) -> str:
        user = quote(self.username, safe="") if self.username else ""
        auth = f"{user}:****@" if self.password else f"{user}@" if user else ""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        query = "?sentinel_password=****" if self.sentinel_password else ""
        return f"{SENTINEL_SCHEME}://{auth}{hosts}/{self.service}/{self.db}{query}"


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEME + "://")


def sentinel_url(
    sentinels: str,
    service: str,
    db: int = 0,
    password: str | None = None,
    username: str | None = None,
    sentinel_password: str | None = None,
) -> str:
    """The URL for REDIS_SENTINELS (`host:port,host:port`) and REDIS_SENTINEL_SERVICE, with
    the master's credentials and database and the Sentinels' password (each quoted)."""
    user = quote(username, safe="") if username else ""
    auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@" if user else ""
    query = f"?sentinel_password={quote(sentinel_password, safe='')}" if sentinel_password else ""
    return f"{SENTINEL_SCHEME}://{auth}{sentinels.replace(' ', '')}/{service}/{db}{query}"


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
    rest, _, query = url.strip()[len(SENTINEL_SCHEME) + 3 :].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(part, shown) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError(f"{shown!r} names no Sentinel; {_EXPECTED}")
    service, _, db_text = urlsplit("/" + path).path.strip("/").partition("/")
    service = unquote(service)
    if not service:
        raise ValueError(f"{shown!r} names no service (the Sentinels' master name); {_EXPECTED}")
    if not SERVICE_PATTERN.fullmatch(service):
        raise ValueError(
            f"{shown!r}: service {service!r} is not a Sentinel master name (letters, digits "
            f"and . - _ only); {_EXPECTED}"
        )
    db_text = db_text.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"{shown!r}: database {db_text!r} is not a number; {_EXPECTED}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(f"{shown!r}: unknown option(s) {', '.join(unknown)}; {_EXPECTED}")
    return SentinelAddress(
        sentinels,
        service,
        int(db_text),
        unquote(password) or None,
        unquote(username) or None,
        options.get("sentinel_password") or None,
    )


def master_client(url: str, **connection_kwargs: Any) -> redis.Redis:
    """A client on the service's current master that finds the new one after a failover.
    `connection_kwargs` (timeouts, retry, decode_responses) apply to the master connections;
    the Sentinels get the same timeouts and retry budget, and the URL's sentinel_password."""
    address = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        name: connection_kwargs[name]
        for name in ("socket_timeout", "socket_connect_timeout", "retry")
        if name in connection_kwargs
    }
    if address.sentinel_password:
        sentinel_kwargs["password"] = address.sentinel_password
    # redis-py's Sentinel is untyped
    sentinel = Sentinel(list(address.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        address.service,
        db=address.db,
        password=address.password,
        username=address.username,
        **connection_kwargs,
    )
    return master


def _redact(url: str) -> str:
    """The URL with the master's and the Sentinels' passwords replaced by ****."""
    url = re.sub(r"(?i)(sentinel_password=)[^&#]*", r"\1****", url)
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:****@{hosts}"
