"""`rollout explain`: replay one audited decision's recorded inputs through today's policy and
guards (the same `evaluate_all` -> `check_all_guards` the flow runs; a fast abort's through
`abort_proposals` between them, as the abort run) and say whether today's code and
configuration reproduce it, and if not, which rule or threshold changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollout_core.abort import (
    ALERT_VERDICT_PREFIX,
    FEATURE_LABEL,
    Alert,
    abort_proposals,
    ignore_reason,
)
from rollout_core.config import FeatureSpec
from rollout_core.controller import check_all_guards, evaluate_all
from rollout_core.decision_inputs import (
    PROJECT_VERSION,
    DecisionInputs,
    RecordedSlo,
    ladder_rules,
    spec_hash,
    spec_rules,
)
from rollout_core.model import Decision

__all__ = ["Explanation", "explain_inputs"]


@dataclass(frozen=True)
class Explanation:
    reproduces: bool
    recorded: dict[str, Any]
    replayed: dict[str, Any]
    differences: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "reproduces": self.reproduces,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "differences": list(self.differences),
        }


def explain_inputs(
    inputs: DecisionInputs, spec: FeatureSpec | None, at: datetime, dry_run: bool = False
) -> Explanation:
    """The recorded decision next to today's replay of its inputs at its own time `at`;
    `dry_run`: the entry was a dry run's recommendation, never applied to the flag."""
    recorded = {
        "action": inputs.action,
        "dry_run": dry_run,
        "to_percent": inputs.to_percent,
        "from_percent": inputs.state.percent,
        "verdicts": {slo.name: slo.verdict for slo in inputs.slos},
        "config_hash": inputs.config_hash,
        "version": inputs.version,
    }
    if spec is None:
        reason = f"feature {inputs.state.feature!r} is no longer configured; nothing to replay"
        return Explanation(False, recorded, {}, (reason,))
    feature = spec.name
    states = {feature: inputs.state}
    proposals = evaluate_all([spec], {feature: inputs.snapshot(at)}, states)
    for alert in recorded_alerts(inputs, spec):  # a fast abort: the abort run's evaluation
        if ignore_reason(spec, alert) is None:
            proposals = abort_proposals([spec], proposals, states, alert)
    decision = check_all_guards([spec], states, proposals, at)[feature]
    if not isinstance(decision, Decision):
        return Explanation(False, recorded, {"error": decision.error}, (str(decision.error),))
    replayed = {
        "action": str(decision.action),
        "to_percent": decision.to_percent,
        "from_percent": decision.from_percent,
        "verdicts": {v.name: str(v.verdict) for v in decision.verdicts},
        "reason": decision.reason,
        "config_hash": spec_hash(spec),
        "version": PROJECT_VERSION,
    }
    same = replayed["action"] == inputs.action and decision.to_percent == inputs.to_percent
    differences = () if same else _differences(inputs, spec, decision)
    return Explanation(same, recorded, replayed, differences)


def recorded_alerts(inputs: DecisionInputs, spec: FeatureSpec) -> list[Alert]:
    """The firing alerts a fast abort's inputs record (`alert:<name>` rows), as the abort run
    received them: its verdict needs only the name and value; the fingerprint and start are
    in the entry's recorded reason."""
    alerts = []
    for slo in inputs.slos:
        if slo.name.startswith(ALERT_VERDICT_PREFIX):
            name = slo.name.removeprefix(ALERT_VERDICT_PREFIX)
            alerts.append(
                Alert(
                    name=name,
                    feature=spec.feature,
                    status="firing",
                    fingerprint="as recorded",
                    starts_at="its recorded start",
                    labels={"alertname": name, FEATURE_LABEL: spec.feature},
                    value=None if slo.value is None else repr(slo.value),
                )
            )
    return alerts


def _absent_series_change(slo: RecordedSlo, zero_today: bool) -> str:
    """For a count SLO whose series was absent (recorded as null, no query error): how it was
    read then (inferred from its verdict) against how today's `absent_is_zero` reads it."""
    if slo.kind != "count" or slo.value is not None or slo.error_kind is not None:
        return ""
    if slo.verdict != "inconclusive":
        zero_then = True  # judged: the absence was read as 0
    elif slo.min_samples == 0:
        zero_then = False  # nothing else makes a count with no min_samples inconclusive
    else:
        return ""  # 0 below min_samples is inconclusive too: not known
    if zero_then == zero_today:
        return ""
    read = {True: "read as 0 (absent_is_zero: true)", False: "no data (absent_is_zero: false)"}
    return (
        f"SLO {slo.name!r}: its series was absent; {read[zero_then]} then, {read[zero_today]} today"
    )


def _ladder_change(recorded: dict[str, Any], spec: FeatureSpec, percent: float) -> str:
    """How the ladder changed, if it did: read from the hash, length and neighbouring steps an
    entry records (or the whole ladder, as entries written before recorded it)."""
    today = ladder_rules(spec.ladder, percent)
    if isinstance(recorded.get("ladder"), list):  # an older entry: the ladder whole
        try:
            then = ladder_rules(tuple(float(step) for step in recorded["ladder"]), percent)
        except (TypeError, ValueError):
            return f"ladder: the entry's recorded ladder {recorded['ladder']!r:.80} is not one"
    elif "ladder_hash" in recorded:
        then = recorded
    else:
        return ""
    if then.get("ladder_hash") == today["ladder_hash"]:
        return ""
    return (
        f"ladder changed: {_ladder_text(then, percent)} then, {_ladder_text(today, percent)} today"
    )


def _ladder_text(rules: dict[str, Any], percent: float) -> str:
    near = rules.get("ladder_near")
    below, above = near if isinstance(near, list) and len(near) == 2 else (None, None)
    shown = [f"{s:g}%" if isinstance(s, int | float) else "none" for s in (below, above)]
    return (
        f"{rules.get('ladder_steps', '?')} steps (below {percent:g}%: {shown[0]}, above: "
        f"{shown[1]}; hash {rules.get('ladder_hash')})"
    )


def _differences(inputs: DecisionInputs, spec: FeatureSpec, decision: Decision) -> tuple[str, ...]:
    found = [
        f"recorded {inputs.action} to {inputs.to_percent:g}%, today {decision.action} to "
        f"{decision.to_percent:g}% ({decision.reason})"
    ]
    today = {slo.name: slo for slo in spec.slos}
    verdicts = {v.name: v for v in decision.verdicts}
    for slo in inputs.slos:
        now = today.get(slo.name)
        if slo.name.startswith(ALERT_VERDICT_PREFIX):
            alert = slo.name.removeprefix(ALERT_VERDICT_PREFIX)
            if alert not in spec.abort_on:
                listed = ", ".join(spec.abort_on) or "none"
                found.append(
                    f"alert {alert!r} is no longer in {spec.feature}'s abort_on (listed: "
                    f"{listed}): today's abort run would ignore it"
                )
            continue
        if now is None:
            found.append(f"SLO {slo.name!r} is no longer configured")
            continue
        if now.max != slo.max:
            found.append(f"SLO {slo.name!r}: max changed {slo.max:g} -> {now.max:g}")
        if (now.min_samples or 0) != slo.min_samples:
            found.append(
                f"SLO {slo.name!r}: min_samples changed {slo.min_samples} -> {now.min_samples}"
            )
        if now.kind != slo.kind:
            found.append(f"SLO {slo.name!r}: kind changed {slo.kind} -> {now.kind}")
        absent = _absent_series_change(slo, bool(now.absent_is_zero)) if now.kind == "count" else ""
        if absent:
            found.append(absent)
        verdict = verdicts.get(slo.name)
        if verdict is not None and str(verdict.verdict) != slo.verdict:
            found.append(f"SLO {slo.name!r}: verdict {slo.verdict} then, {verdict.verdict} today")
    recorded_names = {slo.name for slo in inputs.slos}
    found += [f"SLO {name!r} was added" for name in today if name not in recorded_names]
    rules = spec_rules(spec, inputs.state.percent)
    ladder = _ladder_change(inputs.rules, spec, inputs.state.percent)
    if ladder:
        found.append(ladder)
    for key, value in rules.items():
        if key.startswith("ladder"):
            continue
        if key in inputs.rules and inputs.rules[key] != value:
            found.append(f"{key} changed {inputs.rules[key]} -> {value}")
    blocked_then = {name for name, blocks in inputs.guards if blocks}
    blocked_now = {g.name for g in decision.guards if g.blocks}
    for name in sorted(blocked_then - blocked_now):
        found.append(f"guard {name!r} blocked then, not today")
    for name in sorted(blocked_now - blocked_then):
        found.append(f"guard {name!r} blocks today, not then")
    if len(found) == 1 and inputs.config_hash != spec_hash(spec):
        found.append(f"config hash changed {inputs.config_hash} -> {spec_hash(spec)}")
    if len(found) == 1 and inputs.version != PROJECT_VERSION:
        found.append(f"policy code changed: version {inputs.version} -> {PROJECT_VERSION}")
    return tuple(found)
