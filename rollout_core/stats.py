"""The one statistic the SLO policy needs: a one-sided Wilson lower bound for an error ratio.

A lower bound above the limit is strong evidence of a breach even on little traffic, while a
point estimate on 20 requests is not (1 error in 20 is 5%).
"""

from __future__ import annotations

import math

__all__ = ["Z_99_ONE_SIDED", "wilson_lower_bound"]

Z_99_ONE_SIDED = 2.3263478740408408  # the standard normal's 99th percentile


def wilson_lower_bound(ratio: float, samples: float, z: float = Z_99_ONE_SIDED) -> float:
    """The Wilson score lower bound of a proportion observed as `ratio` over `samples` trials.

    Counts may be fractional (Prometheus `increase()` extrapolates); the ratio is clamped to
    0..1. Raises ValueError for no samples or a NaN ratio: there is no bound without evidence.
    """
    if not samples > 0 or math.isinf(samples):
        raise ValueError(f"samples {samples!r} must be a positive finite count")
    if math.isnan(ratio):
        raise ValueError("ratio is NaN; a bound needs an observed ratio")
    p = min(max(ratio, 0.0), 1.0)
    z2_n = z * z / samples
    centre = p + z2_n / 2
    spread = z * math.sqrt(p * (1 - p) / samples + z2_n / (4 * samples))
    return max(0.0, (centre - spread) / (1 + z2_n))
