"""Segment order: the rules that tie a segmented feature's segments together.

Each segment is judged alone by `propose` and the guards, on its own evidence and history.
Then, per feature, `order_segments` holds the promotions the order forbids: under
`order: sequential` a segment promotes only when every earlier segment is at 100% (and not
rolling back in this pass); with `halt_on_breach: all` a breach in a segment also holds the
promotions of every later segment. A rollback is never held here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from rollout_core.config import FeatureSpec
from rollout_core.errors import RolloutError
from rollout_core.model import Action, Decision, FlagState, GuardResult, Verdict, format_percent

__all__ = ["SEGMENT_ORDER_GUARD", "has_breach", "order_segments"]

SEGMENT_ORDER_GUARD = "segment order"
_Judged = TypeVar("_Judged")


def has_breach(decision: Decision) -> bool:
    """True when any SLO of the decision's evidence is a breach."""
    return any(v.verdict is Verdict.BREACH for v in decision.verdicts)


def _held(decision: Decision, why: str) -> Decision:
    return replace(
        decision,
        action=Action.HOLD,
        to_percent=decision.from_percent,
        proposed=decision.proposed or decision.action,
        proposed_percent=decision.to_percent,
        guard=SEGMENT_ORDER_GUARD,
        guards=(*decision.guards, GuardResult(SEGMENT_ORDER_GUARD, True, why)),
        reasons=(f"Hold at {format_percent(decision.from_percent)}: {why}", *decision.reasons),
    )


def _is_complete(state: FlagState | RolloutError | None, decision: object) -> bool:
    rolling_back = isinstance(decision, Decision) and decision.action is Action.ROLLBACK
    return isinstance(state, FlagState) and state.percent >= 100 and not rolling_back


def order_segments(
    specs: Sequence[FeatureSpec],
    states: Mapping[str, FlagState | RolloutError],
    decisions: Mapping[str, _Judged],
) -> dict[str, _Judged | Decision]:
    """The decisions with the promotions the segment order forbids turned into holds."""
    ordered: dict[str, _Judged | Decision] = dict(decisions)
    by_feature: dict[str, list[FeatureSpec]] = {}
    for spec in specs:
        if spec.parent is not None and spec.segments is not None:
            by_feature.setdefault(spec.parent, []).append(spec)
    for units in by_feature.values():
        segments = units[0].segments
        assert segments is not None
        breached: str | None = None
        waiting: str | None = None  # the first earlier segment not at 100%
        for unit in units:
            decision = ordered.get(unit.name)
            if isinstance(decision, Decision) and decision.action is Action.PROMOTE:
                if segments.halt_on_breach == "all" and breached is not None:
                    why = f"segment {breached} breached (halt_on_breach: all)"
                    ordered[unit.name] = _held(decision, why)
                elif segments.order == "sequential" and waiting is not None:
                    ordered[unit.name] = _held(decision, waiting)
            if breached is None and isinstance(decision, Decision) and has_breach(decision):
                breached = unit.segment
            if waiting is None and not _is_complete(states.get(unit.name), decision):
                state = states.get(unit.name)
                at = format_percent(state.percent) if isinstance(state, FlagState) else "unknown"
                waiting = f"earlier segment {unit.segment} is at {at}, not 100% (order: sequential)"
    return ordered
