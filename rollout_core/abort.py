"""The fast abort: a firing Prometheus alert listed in a feature's `abort_on` rolls it back.

Alertmanager calls the alert bridge with a version 4 webhook payload; `parse_webhook` checks
it and turns each alert with a `rollout_feature` label into an `Alert`, which the bridge sends
as a Prefect event and the abort deployment receives as its `alert` parameter. In the abort
run the alert is one more verdict, a BREACH by itself (`alert:<name>`), beside the SLO
verdicts the run still reads; the guards then apply as on the scheduled path (a paused or
disabled feature stays unchanged; dwell, cooldown and freeze never delay a rollback).

One alert episode (fingerprint + startsAt) aborts at most once: the compare-and-set records
it in `rollout:abort:episodes` in the same script that writes the percent, and a run whose
episode is already there holds. For a segmented feature an alert carrying a segment's label
(`region="eu-west"`) aborts that segment only; one without it aborts every segment, each
recording the episode for itself. Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rollout_core.config import ALERT_NAME_PATTERN, FEATURE_NAME_PATTERN, FeatureSpec
from rollout_core.errors import ConfigError
from rollout_core.model import Action, Decision, FlagState, SloVerdict, Verdict
from rollout_core.policy import propose

__all__ = [
    "ALERT_FIRING_EVENT",
    "ALERT_RESOLVED_EVENT",
    "ALERT_VERDICT_PREFIX",
    "EPISODE_HANDLED_GUARD",
    "FEATURE_LABEL",
    "Alert",
    "InvalidAlertPayload",
    "abort_proposals",
    "aborted_units",
    "alert_event",
    "alert_verdict",
    "ignore_reason",
    "is_aborted_by",
    "parse_alert",
    "parse_webhook",
]

ALERT_FIRING_EVENT = "rollout.alert.firing"
ALERT_RESOLVED_EVENT = "rollout.alert.resolved"
FEATURE_LABEL = "rollout_feature"  # the alert label that names the feature
EPISODE_HANDLED_GUARD = "abort episode handled"
ALERT_VERDICT_PREFIX = "alert:"  # the verdict's name, `alert:<name>`; no SLO name has a colon
_RESOURCE_PREFIX = "rollout.feature."  # the resource id of a feature's events (as in tasks/)
_STATUSES = ("firing", "resolved")


class InvalidAlertPayload(ValueError):
    """An Alertmanager payload (or an abort run's `alert` parameter) that is not what it
    should be; the message names the field and what was expected."""


@dataclass(frozen=True)
class Alert:
    """One alert about one feature, as Alertmanager sent it."""

    name: str
    feature: str
    status: str  # firing | resolved
    fingerprint: str
    starts_at: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: str | None = None  # the `value` annotation, when the rule sets one

    @property
    def episode(self) -> str:
        """One firing episode: the same fingerprint and startsAt on every resend."""
        return self.episode_of(self.feature)

    def episode_of(self, unit: str) -> str:
        """The episode as recorded for one unit: the feature, or a segment `google[eu-west]`."""
        return f"{unit}|{self.name}|{self.fingerprint}|{self.starts_at}"

    def as_parameter(self) -> dict[str, Any]:
        """The JSON the event carries and the abort run receives (`parse_alert` reads it)."""
        return {
            "name": self.name,
            "feature": self.feature,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "labels": dict(self.labels),
            "value": self.value,
        }


def _text(where: str, value: Any, *, required: bool = True) -> str:
    if isinstance(value, str) and (value or not required):
        return value
    shown = repr(value) if value is not None else "missing"
    raise InvalidAlertPayload(f"{where} is {shown}; expected a non-empty string")


def _labels(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidAlertPayload(f"{where} is {value!r:.200}; expected a mapping of strings")
    return dict(value)


def _alert(where: str, item: Any) -> Alert | None:
    """One entry of `alerts[]`; None when it has no `rollout_feature` label (not ours)."""
    if not isinstance(item, Mapping):
        raise InvalidAlertPayload(f"{where} is {item!r:.200}; expected an alert object")
    labels = _labels(f"{where}.labels", item.get("labels"))
    annotations = item.get("annotations") or {}
    annotations = _labels(f"{where}.annotations", annotations)
    status = _text(f"{where}.status", item.get("status"))
    if status not in _STATUSES:
        raise InvalidAlertPayload(f"{where}.status is {status!r}; expected firing or resolved")
    feature = labels.get(FEATURE_LABEL)
    if feature is None:
        return None
    if not FEATURE_NAME_PATTERN.fullmatch(feature):
        raise InvalidAlertPayload(
            f"{where}.labels.{FEATURE_LABEL} is {feature!r:.100}; expected a feature name "
            f"matching {FEATURE_NAME_PATTERN.pattern}"
        )
    name = _text(f"{where}.labels.alertname", labels.get("alertname"))
    return Alert(
        name=name,
        feature=feature,
        status=status,
        fingerprint=_text(f"{where}.fingerprint", item.get("fingerprint")),
        starts_at=_text(f"{where}.startsAt", item.get("startsAt")),
        labels=labels,
        value=annotations.get("value"),
    )


def parse_webhook(body: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version "4") that carry a
    `rollout_feature` label; InvalidAlertPayload names the first bad field."""
    if not isinstance(body, Mapping):
        raise InvalidAlertPayload(f"the body is {type(body).__name__}; expected a JSON object")
    version = body.get("version")
    if version != "4":
        raise InvalidAlertPayload(f'version is {version!r}; expected "4" (Alertmanager webhook)')
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidAlertPayload(f"alerts is {alerts!r:.100}; expected a list of alerts")
    found = (_alert(f"alerts[{index}]", item) for index, item in enumerate(alerts))
    return [alert for alert in found if alert is not None]


def parse_alert(parameter: Any) -> Alert:
    """The abort run's `alert` parameter (what `Alert.as_parameter` wrote); ConfigError
    naming the field when it is not one."""
    if not isinstance(parameter, Mapping):
        raise ConfigError(f"alert parameter is {parameter!r:.200}; expected an alert object")
    try:
        name = _text("alert.name", parameter.get("name"))
        if not ALERT_NAME_PATTERN.fullmatch(name):
            raise InvalidAlertPayload(f"alert.name is {name!r:.100}; expected an alert name")
        feature = _text("alert.feature", parameter.get("feature"))
        if not FEATURE_NAME_PATTERN.fullmatch(feature):
            raise InvalidAlertPayload(f"alert.feature is {feature!r:.100}; expected a feature")
        value = parameter.get("value")
        return Alert(
            name=name,
            feature=feature,
            status=_text("alert.status", parameter.get("status", "firing")),
            fingerprint=_text("alert.fingerprint", parameter.get("fingerprint")),
            starts_at=_text("alert.starts_at", parameter.get("starts_at")),
            labels=_labels("alert.labels", parameter.get("labels") or {}),
            value=None if value is None else str(value),
        )
    except InvalidAlertPayload as error:
        raise ConfigError(str(error)) from None


def alert_event(alert: Alert) -> dict[str, Any]:
    """The Prefect event for an alert: `rollout.alert.firing` (or `.resolved`) about the
    resource `rollout.feature.<name>`, the alert in its payload."""
    return {
        "event": ALERT_FIRING_EVENT if alert.status == "firing" else ALERT_RESOLVED_EVENT,
        "resource": {
            "prefect.resource.id": f"{_RESOURCE_PREFIX}{alert.feature}",
            "prefect.resource.name": alert.feature,
            "prefect.resource.role": "feature",
        },
        "payload": {"feature": alert.feature, "alert": alert.as_parameter()},
    }


def ignore_reason(spec: FeatureSpec | None, alert: Alert) -> str | None:
    """Why an abort run does nothing with this alert (logged), or None when it acts on it."""
    if spec is None:
        return f"alert {alert.name} names feature {alert.feature!r}, which is not configured"
    if alert.status != "firing":
        return f"alert {alert.name} for {alert.feature} is {alert.status}, not firing"
    if alert.name not in spec.abort_on:
        listed = ", ".join(spec.abort_on) or "none"
        return f"alert {alert.name} is not in {alert.feature}'s abort_on (listed: {listed})"
    return None


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def alert_verdict(alert: Alert) -> SloVerdict:
    """A firing `abort_on` alert as a verdict: a breach by itself, with its labels and value."""
    shown = ", ".join(f'{k}="{v}"' for k, v in sorted(alert.labels.items()) if k != "alertname")
    value = f"value {alert.value}, " if alert.value is not None else ""
    return SloVerdict(
        name=f"{ALERT_VERDICT_PREFIX}{alert.name}",
        verdict=Verdict.BREACH,
        value=_number(alert.value),
        limit=math.nan,
        message=(
            f"alert:{alert.name} firing since {alert.starts_at} ({value}{{{shown}}}, "
            f"fingerprint {alert.fingerprint}): breach"
        ),
    )


def _episode_handled(decision: Decision, alert: Alert) -> Decision:
    return replace(
        decision,
        action=Action.HOLD,
        to_percent=decision.from_percent,
        guard=EPISODE_HANDLED_GUARD,
        reasons=(
            f"Hold at {decision.from_percent:g}%: alert {alert.name} episode (fingerprint "
            f"{alert.fingerprint}, since {alert.starts_at}) already aborted; a resend changes "
            "nothing, the scheduled runs judge the SLOs",
            *(v.message for v in decision.verdicts),
        ),
    )


def is_aborted_by(spec: FeatureSpec, alert: Alert) -> bool:
    """Whether the alert aborts this unit: its feature, or a segment of it whose labels
    (`region`, ...) the alert carries with the segment's values. An alert without a segment's
    label aborts every segment of the feature."""
    if spec.feature != alert.feature:
        return False
    return all(alert.labels.get(label, value) == value for label, value in spec.segment_match)


def aborted_units(specs: Sequence[FeatureSpec], alert: Alert) -> list[str]:
    """The names of the units (the feature, or its segments) this alert aborts."""
    return [spec.name for spec in specs if is_aborted_by(spec, alert)]


def abort_proposals(
    specs: Sequence[FeatureSpec],
    proposals: Mapping[str, Decision | Any],
    states: Mapping[str, FlagState | Any],
    alert: Alert,
    handled: Collection[str] = (),
) -> dict[str, Decision | Any]:
    """The scheduled path's proposals with the alert's verdict added to each unit it aborts:
    a rollback to the safe step (the guards still apply), or, for a unit whose episode
    already aborted (`handled`), a hold that still records the SLO verdicts. Other entries
    pass through."""
    result = dict(proposals)
    for spec in specs:
        proposal, state = proposals.get(spec.name), states.get(spec.name)
        if not is_aborted_by(spec, alert) or not isinstance(proposal, Decision):
            continue
        if not isinstance(state, FlagState):
            continue
        decision = propose(spec, state, (alert_verdict(alert), *proposal.verdicts))
        result[spec.name] = _episode_handled(decision, alert) if spec.name in handled else decision
    return result
