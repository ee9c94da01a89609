"""MinimalGate: the seed's gate, kept for existing callers as a thin wrapper over
`rollout_sdk.RolloutClient` (background refresh every `cache_ttl_sec`, state served up to
`max_stale_sec`, then False). New code should use RolloutClient directly: docs/sdk.md.

The seed's callers build a gate per call. So every MinimalGate over the same Redis client (and
settings) shares one RolloutClient, kept in a module-level registry: two threads per Redis
client, not per call. As this is the compatibility wrapper, a feature's first call waits up to
FIRST_LOAD_TIMEOUT_SEC, once per shared client, for it to be read, so a gate built and asked at
once answers from Redis like the seed's did; RolloutClient itself never waits.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from rollout_sdk.client import RolloutClient
from rollout_sdk.keys import env_token

__all__ = ["FIRST_LOAD_TIMEOUT_SEC", "MinimalGate", "env_token"]

_SHORTEST_INTERVAL = 0.05  # a TTL of 0 (read on every call) becomes a 50 ms refresh
FIRST_LOAD_TIMEOUT_SEC = 0.5


class _Shared:
    """One RolloutClient, the gates open on it, and the features whose first load was waited
    for (each once)."""

    def __init__(self, client: RolloutClient, redis_client: Any) -> None:
        self.client = client
        self.redis_client = redis_client  # held, so its id() is not reused while registered
        self.gates = 0
        self.waited: set[str] = set()


_REGISTRY: dict[tuple[int, float, float, int, int], _Shared] = {}
_LOCK = threading.Lock()


class MinimalGate:
    """The RolloutGate: sticky, fail-closed, never raising."""

    def __init__(
        self,
        redis_client: Any,
        cache_ttl_sec: float = 5,
        max_stale_sec: float = 60,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not (cache_ttl_sec >= 0 and max_stale_sec >= 0):
            raise ValueError(
                f"cache_ttl_sec={cache_ttl_sec!r}, max_stale_sec={max_stale_sec!r}: "
                "both must be seconds >= 0"
            )
        interval = max(float(cache_ttl_sec), _SHORTEST_INTERVAL)
        key = (id(redis_client), interval, float(max_stale_sec), id(clock), id(environ))
        with _LOCK:
            shared = _REGISTRY.get(key)
            if shared is None:
                client = RolloutClient(
                    client=redis_client,
                    refresh_interval=interval,
                    max_stale=float(max_stale_sec),
                    clock=clock,
                    environ=environ,
                )
                shared = _REGISTRY[key] = _Shared(client, redis_client)
            shared.gates += 1
        self._key, self._shared, self._closed = key, shared, False
        self.client = shared.client

    def allow(self, feature: str, context: Mapping[str, object]) -> bool:
        """Whether this request's actor sees the feature (RolloutClient.allow)."""
        self._first_load(feature)
        return self.client.allow(feature, context)

    def percent(self, feature: str) -> float:
        """The percent of bucketed actors let in now: 0 when killed, disabled or unknown."""
        self._first_load(feature)
        return self.client.percent(feature)

    def _first_load(self, feature: object) -> None:
        """Wait (once per feature and shared client, at most FIRST_LOAD_TIMEOUT_SEC) for the
        refresher to read a feature this process has not read yet."""
        shared = self._shared
        if feature in shared.waited or not isinstance(feature, str):
            return
        shared.waited.add(feature)
        try:
            self.client.percent(feature)  # names it: the refresher reads it at once
            deadline = time.monotonic() + FIRST_LOAD_TIMEOUT_SEC
            while True:
                status = self.client.status().features.get(feature)
                if (status is not None and status.age is not None) or (
                    time.monotonic() >= deadline
                ):
                    return
                time.sleep(0.005)
        except Exception:  # never raise into the caller; the answer then fails closed
            return

    def close(self) -> None:
        """Release this gate; the shared client stops when its last open gate is closed."""
        if self._closed:
            return
        self._closed = True
        with _LOCK:
            self._shared.gates -= 1
            if self._shared.gates > 0 or _REGISTRY.get(self._key) is not self._shared:
                return
            del _REGISTRY[self._key]
        self._shared.client.close()
