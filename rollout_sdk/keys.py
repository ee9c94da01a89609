"""The Redis names the controller writes and services read (DESIGN §4), in one place.

Standard library only: the SDK and the controller's store both import these.
"""

from __future__ import annotations

__all__ = ["AUDIT_STREAM", "CHANGES_CHANNEL", "FEATURES_REGISTRY", "flag_key"]

AUDIT_STREAM = "rollout:audit"
# every audited write publishes the feature's name here, so clients refresh it within a second
CHANGES_CHANNEL = "rollout:changes"
# a set of every initialised feature, maintained by `rollout init` (and every audited write)
FEATURES_REGISTRY = "rollout:features"


def flag_key(feature: str, field: str) -> str:
    """`flags:{feature}:{field}`, e.g. flags:google:rollout_percent."""
    return f"flags:{feature}:{field}"
