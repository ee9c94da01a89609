"""Sticky bucketing: which actors a percent lets in, salted per feature.

An actor's bucket is SHA-256 of the UTF-8 string `f"{feature}:{unit}"`, first 8 bytes
big-endian, modulo 10000. The actor is in while `bucket < percent * 100`, so 0.01% granularity,
and raising the percent only ever adds actors. The feature salt makes each feature expose a
different first 10%. Changing any of this reshuffles users: the golden vectors test guards it.
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["BUCKETS", "bucket", "bucketing_unit", "is_in_rollout", "percent_threshold"]

BUCKETS = 10_000  # 0.01% each


def bucket(feature: str, unit: str) -> int:
    """The unit's bucket for this feature, in 0..9999; the same on every machine, forever."""
    digest = hashlib.sha256(f"{feature}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def bucketing_unit(actor_id: object, workspace_id: object | None = None) -> str:
    """What gets bucketed: `"{workspace_id}:{actor_id}"` when a workspace is given, else the
    actor id, so the same person in two workspaces is two independent units."""
    if workspace_id is None or workspace_id == "":
        return f"{actor_id}"
    return f"{workspace_id}:{actor_id}"


def percent_threshold(percent: float) -> int:
    """The percent in hundredths (buckets below it are in), rounded so that float noise such as
    `1.1 * 100 == 110.00000000000001` cannot let in one bucket too many."""
    is_number = isinstance(percent, int | float) and not isinstance(percent, bool)
    if not (is_number and math.isfinite(percent) and 0 <= percent <= 100):
        raise ValueError(f"rollout percent {percent!r} is invalid; expected a number in 0..100")
    return round(percent * 100)


def is_in_rollout(bucket: int, percent: float) -> bool:
    """Whether a bucket is inside a rollout at `percent` (0..100, 0.01% granularity)."""
    return bucket < percent_threshold(percent)
