"""What services import to ask the rollout gate: redis and the standard library only.

    from rollout_sdk import RolloutClient

    flags = RolloutClient()          # REDIS_URL; a background thread keeps the flags fresh
    flags.wait_ready(2.0)            # once, at start-up
    if flags.allow("google", {"actor_id": user.id, "workspace_id": workspace.id}):
        ...

The OpenFeature provider is `rollout_sdk.openfeature.RolloutProvider` (needs openfeature-sdk),
client metrics `rollout_sdk.metrics.register_metrics` (needs prometheus_client). docs/sdk.md.
"""

from rollout_sdk.client import ClientStatus, Evaluation, FeatureStatus, RolloutClient
from rollout_sdk.state import (
    DEFAULT,
    DISABLED,
    ERROR,
    SPLIT,
    STALE,
    TARGETING_MATCH,
    Overrides,
)

__all__ = [
    "DEFAULT",
    "DISABLED",
    "ERROR",
    "SPLIT",
    "STALE",
    "TARGETING_MATCH",
    "ClientStatus",
    "Evaluation",
    "FeatureStatus",
    "Overrides",
    "RolloutClient",
]
