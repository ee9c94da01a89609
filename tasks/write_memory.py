"""What the controller last wrote, kept in Prefect's database between runs (ROLLOUT_WRITE_MEMORY).

Each run wires a new flag store, so the store's own memory of its last applied changes ends
with the run. With the memory on, a run loads it from Prefect Variables before reading the
flags and saves what it applied afterwards: a run on any worker then holds the promotions of a
feature whose `rollout:last_write` in Redis is older than the change a previous run applied
(a Sentinel failover lost it; a rollback still goes through). A failure here is a warning in
the run's message, never a failed run: the memory guards, it does not decide.

One Variable per (Redis target, unit), named by memory_variable_name: the target normalised by
memory_target (scheme, host lower-cased, port 6379 and db 0 made explicit, username kept,
password and other options dropped; a Sentinel URL's Sentinels sorted), so respelling REDIS_URL
keeps the memory. A name from before the normalisation (the digest of the target as written)
is still read, and the next save writes the normalised one. A unit's entry is a few
dozen characters whatever the number of features (Prefect refuses a value over 5,000), and a
run saves only the units it changed itself, each only when its write is newer than the one
saved. Two runs that overlap (the abort deployment beside the scheduled one, on two workers)
therefore never put back an older write they loaded at their start. What remains: two runs
that change the same unit and save it within the same few milliseconds (a read then a write
of that Variable) may keep the older of the two; the next change of the unit saves again.

Remembered: every change a live controller run applied, a change recovered after a lost
reply included (the store puts both in its `last_applied`). Not remembered: writes by the
CLI (`rollout set`, pause, kill) and the override flow, which write through their own store;
they are newer than anything remembered, so they never trip the refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rollout_core.ports import FlagStore
from rollout_core.urls import redact_url
from rollout_sdk.sentinel import SENTINEL_SCHEME, is_sentinel_url, parse_sentinel_url

__all__ = [
    "MEMORY_PREFIX",
    "MEMORY_TAG",
    "Recalled",
    "forget_all_writes",
    "memory_target",
    "memory_variable_name",
    "recall_writes",
    "remember_writes",
]

MEMORY_PREFIX = "rollout-last-applied-"
MEMORY_TAG = "rollout-write-memory"
# the API returns at most this many Variables per request (Prefect's default limit)
_PAGE = 200
DEFAULT_PORT = 6379


def memory_target(redis_url: str) -> str:
    """The Redis target a memory belongs to, however REDIS_URL spells it, and never a secret:
    `redis://[user@]host:port/db` (host lower-cased, not resolved; port 6379 and db 0 made
    explicit; password and options dropped), `redis+sentinel://[user@]h:p,h:p/service/db`
    (Sentinels sorted). Takes the URL as written or redacted; one it cannot parse comes back
    redacted, as written."""
    shown = redact_url(redis_url.strip())  # first: no secret reaches a name or a value
    try:
        return _sentinel_target(shown) if is_sentinel_url(shown) else _plain_target(shown)
    except ValueError:
        return shown


def _plain_target(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    scheme = parts.scheme.lower()
    user = _user(unquote(parts.username or ""))
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "unix":
        db = _db(options.get("db") or "0")
        return f"unix://{user}{parts.path}?db={db}"
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"scheme {scheme!r} is not a Redis URL")
    host = (parts.hostname or "localhost").lower()
    host = f"[{host}]" if ":" in host else host
    db = _db(options.get("db") or parts.path.strip("/") or "0")  # redis-py: the query wins
    return f"{scheme}://{user}{host}:{parts.port or DEFAULT_PORT}/{db}"


def _sentinel_target(redis_url: str) -> str:
    address = parse_sentinel_url(redis_url)
    sentinels = sorted({(host.lower(), port) for host, port in address.sentinels})
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sentinels)
    user = _user(address.username or "")
    return f"{SENTINEL_SCHEME}://{user}{hosts}/{address.service}/{address.db}"


def _user(username: str) -> str:
    """`user@`, or nothing: redact_url hides a lone userinfo (often a password) as `****`."""
    return f"{quote(username, safe='')}@" if username and username != "****" else ""


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"database {text!r} is not a number")
    return int(text)


def memory_variable_name(redis_target: str, unit: str) -> str:
    """The Variable holding `unit`'s last applied write on `redis_target` (normalised by
    memory_target): a digest, since a Variable name takes only lowercase letters, digits,
    dashes and underscores."""
    return _digest_name(memory_target(redis_target), unit)


def _digest_name(target: str, unit: str) -> str:
    digest = hashlib.sha256(f"{target}\n{unit}".encode()).hexdigest()[:40]
    return MEMORY_PREFIX + digest


@dataclass(frozen=True)
class Recalled:
    """What a run knew before it applied anything (so remember_writes saves only its own
    writes), and the warning when the memory could not be loaded."""

    known: dict[str, str] = field(default_factory=dict)
    warning: str | None = None


def _memory_of(store: FlagStore) -> dict[str, str] | None:
    memory = getattr(store, "last_applied", None)
    return memory if isinstance(memory, dict) else None


def _stream_key(audit_id: str) -> tuple[int, int]:
    ms, _, seq = audit_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


def _saved_id(value: Any) -> str:
    """The audit id a memory Variable holds ("" for anything else)."""
    audit_id = value.get("audit_id") if isinstance(value, dict) else None
    return audit_id if isinstance(audit_id, str) else ""


def _read_many(names: list[str]) -> dict[str, Any]:
    """The values of the Variables named `names` that exist, a page of requests at a time."""
    from prefect.client.orchestration import get_client

    values: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(names), _PAGE):
            page = names[start : start + _PAGE]
            body = {"variables": {"name": {"any_": page}}, "limit": len(page)}
            response = client.request("POST", "/variables/filter", json=body)
            for variable in response.json():
                values[variable["name"]] = variable.get("value")
    return values


@task(cache_policy=NO_CACHE)
def recall_writes(store: FlagStore, redis_target: str, units: Iterable[str]) -> Recalled:
    """Load the changes earlier runs applied to `units` on this Redis into the store's memory."""
    memory = _memory_of(store)
    if memory is None:
        return Recalled()
    # the normalised name, then the one an earlier version gave the target as written (read
    # until the next save writes the normalised one)
    targets = dict.fromkeys((memory_target(redis_target), redis_target))
    names = {_digest_name(target, unit): unit for unit in units for target in targets}
    try:
        saved = _read_many(list(names))
    except Exception as exc:  # the memory guards; a run without it still decides
        warning = f"write memory not loaded ({exc}); deciding without it"
        get_run_logger().warning(warning)
        return Recalled(dict(memory), warning)
    for name, value in saved.items():
        unit, audit_id = names[name], _saved_id(value)
        if _stream_key(audit_id) > _stream_key(memory.get(unit, "")):
            memory[unit] = audit_id
    return Recalled(dict(memory))


@task(cache_policy=NO_CACHE)
def remember_writes(store: FlagStore, redis_target: str, recalled: Recalled) -> str | None:
    """Save each write this run applied (not what it recalled) unless a newer one is saved; a
    warning naming what was not saved when Prefect refuses."""
    from prefect.variables import Variable

    memory = _memory_of(store) or {}
    own = {u: i for u, i in memory.items() if i and recalled.known.get(u) != i}
    failed: list[str] = []
    target = memory_target(redis_target)
    for unit, audit_id in sorted(own.items()):
        name = _digest_name(target, unit)
        try:
            if _stream_key(_saved_id(Variable.get(name))) >= _stream_key(audit_id):
                continue  # an overlapping run saved a newer write of it
            value = {"target": target, "unit": unit, "audit_id": audit_id}
            Variable.set(name, value, tags=[MEMORY_TAG], overwrite=True)
        except Exception as exc:
            failed.append(f"{unit} {audit_id} ({exc})")
    if not failed:
        return None
    warning = (
        f"write memory not saved for {'; '.join(failed)}: the next run cannot refuse a Redis "
        "that loses these writes"
    )
    get_run_logger().warning(warning)
    return warning


def forget_all_writes() -> int:
    """Delete every write memory Variable (tests, or an operator starting over); how many."""
    from prefect.client.orchestration import get_client

    body = {"variables": {"tags": {"all_": [MEMORY_TAG]}}, "limit": _PAGE}
    deleted = 0
    with get_client(sync_client=True) as client:
        while True:
            found = client.request("POST", "/variables/filter", json=body).json()
            if not found:
                return deleted
            for variable in found:
                client.delete_variable_by_name(variable["name"])
                deleted += 1
