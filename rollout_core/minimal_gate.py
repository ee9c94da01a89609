"""MinimalGate: the seed's gate, kept for existing callers as a thin wrapper over
`rollout_sdk.RolloutClient` (background refresh every `cache_ttl_sec`, state served up to
`max_stale_sec`, then False). New code should use RolloutClient directly: docs/sdk.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from rollout_sdk.client import RolloutClient
from rollout_sdk.keys import env_token

__all__ = ["MinimalGate", "env_token"]

_SHORTEST_INTERVAL = 0.05  # a TTL of 0 (read on every call) becomes a 50 ms refresh


class MinimalGate:
    """The RolloutGate: sticky, fail-closed, never raising, never waiting on Redis."""

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
        self.client = RolloutClient(
            client=redis_client,
            refresh_interval=max(float(cache_ttl_sec), _SHORTEST_INTERVAL),
            max_stale=float(max_stale_sec),
            clock=clock,
            environ=environ,
        )

    def allow(self, feature: str, context: Mapping[str, object]) -> bool:
        """Whether this request's actor sees the feature (RolloutClient.allow)."""
        return self.client.allow(feature, context)

    def percent(self, feature: str) -> float:
        """The percent of bucketed actors let in now: 0 when killed, disabled or unknown."""
        return self.client.percent(feature)

    def close(self) -> None:
        self.client.close()
