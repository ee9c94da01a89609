"""What request handlers call: a gate that answers, in-process and fast, whether an actor
sees a feature. `rollout_sdk.RolloutClient` implements it over Redis (and
`rollout_core.minimal_gate.MinimalGate`, the seed's name, wraps it).

Context keys: `actor_id` (or `user_id`), optional `workspace_id`, optional `internal: bool`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["RolloutGate"]


@runtime_checkable
class RolloutGate(Protocol):
    def allow(self, feature: str, context: Mapping[str, object]) -> bool:
        """Whether this request's actor sees the feature; sticky per actor, never raises."""
        ...

    def percent(self, feature: str) -> float:
        """The percent of bucketed actors the gate lets in now (0 when killed or disabled)."""
        ...
