"""The whole decision for one feature: SLO verdicts, the policy's proposal, then the guards.

`decide` is pure: the flow gathers the spec, the flag state, the SLO snapshot and the time, and
applies what comes back. The flow may also call the three steps as separate tasks.
"""

from __future__ import annotations

from datetime import datetime

from rollout_core.config import FeatureSpec
from rollout_core.guards import check_guards, require_utc
from rollout_core.model import Decision, FlagState, SloSnapshot
from rollout_core.policy import evaluate_slos, propose

__all__ = ["decide"]


def decide(spec: FeatureSpec, state: FlagState, snapshot: SloSnapshot, now: datetime) -> Decision:
    """evaluate_slos -> propose -> check_guards. `now` must be timezone-aware (UTC)."""
    now = require_utc(now)
    if state.feature != spec.name:
        raise ValueError(f"flag state is for {state.feature!r}, the spec for {spec.name!r}")
    if snapshot.feature not in (spec.name, spec.series_key):
        raise ValueError(f"SLO snapshot is for {snapshot.feature!r}, the spec for {spec.name!r}")
    verdicts = evaluate_slos(spec, snapshot)
    return check_guards(spec, state, propose(spec, state, verdicts), now)
