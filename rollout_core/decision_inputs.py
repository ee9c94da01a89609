"""The inputs of one decision, as the compact JSON each controller audit entry carries.

Enough to replay the decision through today's policy and guards (`rollout explain`): every SLO
reading with its n, threshold, kind and verdict; the flag state read; the guard states; the
rules the guards used; the config's content hash and the project version. About 600 bytes
for three SLOs. Keys are short on purpose; `DecisionInputs.from_json` is the reader.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from rollout_core.config import FeatureSpec
from rollout_core.model import Decision, FlagState, QueryError, SloReading, SloSnapshot

__all__ = [
    "PROJECT_VERSION",
    "DecisionInputs",
    "RecordedSlo",
    "decision_inputs",
    "describe_inputs",
    "spec_hash",
    "spec_rules",
]

try:
    PROJECT_VERSION = metadata.version("rollout-controller")
except metadata.PackageNotFoundError:  # running from a tree that is not installed
    PROJECT_VERSION = "unknown"


_HASHES: dict[int, tuple[FeatureSpec, str]] = {}


def spec_hash(spec: FeatureSpec) -> str:
    """The content hash of a feature's resolved configuration (16 hex digits); remembered per
    spec object (specs are frozen), so a backtest's thousands of changes hash it once."""
    known = _HASHES.get(id(spec))
    if known is not None and known[0] is spec:
        return known[1]
    text = spec.model_dump_json(exclude={"name"})
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if len(_HASHES) > 10_000:
        _HASHES.clear()
    _HASHES[id(spec)] = (spec, digest)
    return digest


def spec_rules(spec: FeatureSpec) -> dict[str, Any]:
    """The guard and ladder rules, so a differing replay can name the one that changed."""
    return {
        "ladder": [float(step) for step in spec.ladder],
        "safe_percent": float(spec.safe_percent),
        "dwell": spec.dwell.total_seconds(),
        "cooldown": spec.cooldown.total_seconds(),
        "freeze": len(spec.freeze),
    }


def _number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class RecordedSlo:
    name: str
    kind: str
    value: float | None
    samples: float | None
    max: float
    min_samples: int
    verdict: str
    error_kind: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class DecisionInputs:
    """The decoded inputs of one audited decision."""

    version: str
    config_hash: str
    state: FlagState
    slos: tuple[RecordedSlo, ...]
    guards: tuple[tuple[str, bool], ...]
    rules: dict[str, Any]
    proposed: str
    action: str
    to_percent: float

    def snapshot(self, at: datetime) -> SloSnapshot:
        """The readings as the policy saw them."""
        readings = {}
        for slo in self.slos:
            error = None
            if slo.error_kind is not None:
                error = QueryError(slo.name, "", slo.error_kind, "recorded", slo.transient)
            readings[slo.name] = SloReading(slo.name, slo.value, slo.samples, error)
        return SloSnapshot(self.state.feature, readings, at)

    @classmethod
    def from_json(cls, feature: str, text: str) -> DecisionInputs:
        """Decode an entry's `inputs` field; ValueError names what is wrong."""
        try:
            raw = json.loads(text)
            flag = raw["f"]
            state = FlagState(
                feature,
                percent=float(flag[0]),
                enabled=bool(flag[1]),
                internal_only=bool(flag[2]),
                paused=bool(flag[3]),
                last_change_time=_parse_time(flag[4]),
                last_percent=_float(flag[5]),
                last_rollback_time=_parse_time(flag[6]),
                exists=bool(flag[7]) if len(flag) > 7 else True,
            )
            slos = tuple(
                RecordedSlo(
                    name=str(s[0]),
                    kind=str(s[1]),
                    value=_float(s[2]),
                    samples=_float(s[3]),
                    max=float(s[4]),
                    min_samples=int(s[5]),
                    verdict=str(s[6]),
                    error_kind=s[7] if len(s) > 7 else None,
                    transient=bool(s[8]) if len(s) > 8 else False,
                )
                for s in raw["s"]
            )
            proposed, action, to_percent = raw["d"]
            return cls(
                version=str(raw["v"]),
                config_hash=str(raw["h"]),
                state=state,
                slos=slos,
                guards=tuple((str(name), bool(blocks)) for name, blocks in raw["g"]),
                rules=dict(raw.get("c", {})),
                proposed=str(proposed),
                action=str(action),
                to_percent=float(to_percent),
            )
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(
                f"the entry's inputs do not decode ({type(exc).__name__}: {exc}); expected the "
                "compact JSON written by rollout_core.decision_inputs"
            ) from None


def decision_inputs(spec: FeatureSpec, state: FlagState, decision: Decision) -> str:
    """The compact JSON of what `decision` was made from (see the module docstring)."""
    kinds = {slo.name: slo for slo in spec.slos}
    slos = []
    for verdict in decision.verdicts:
        slo = kinds.get(verdict.name)
        row: list[Any] = [
            verdict.name,
            slo.kind if slo is not None else "",
            _number(verdict.value),
            _number(verdict.samples),
            _number(verdict.limit),  # NaN for a pseudo-SLO such as an abort's alert
            (slo.min_samples or 0) if slo is not None else 0,
            str(verdict.verdict),
        ]
        if verdict.error is not None:
            row += [verdict.error.kind, verdict.error.transient]
        slos.append(row)
    flag = [
        state.percent,
        state.enabled,
        state.internal_only,
        state.paused,
        _time(state.last_change_time),
        state.last_percent,
        _time(state.last_rollback_time),
    ]
    if not state.exists:
        flag.append(False)
    body = {
        "v": PROJECT_VERSION,
        "h": spec_hash(spec),
        "f": flag,
        "s": slos,
        "g": [[g.name, g.blocks] for g in decision.guards],
        "c": spec_rules(spec),
        "d": [str(decision.proposed or decision.action), str(decision.action), decision.to_percent],
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def describe_inputs(text: str) -> str:
    """One line per part, for `rollout audit --verbose`: the readings, the flag, the guards."""
    if not text:
        return ""
    try:
        raw = json.loads(text)
        readings = "; ".join(
            f"{s[0]} {s[2]} (n={s[3]}, {s[1]}, max {s[4]}, min_samples {s[5]}): {s[6]}"
            for s in raw["s"]
        )
        flag = raw["f"]
        blocked = [name for name, blocks in raw["g"] if blocks]
        return (
            f"{readings}\nflag: {flag[0]:g}% enabled={flag[1]} paused={flag[3]} "
            f"last_change={flag[4]} last_rollback={flag[6]}\n"
            f"guards: {', '.join(blocked) + ' blocked' if blocked else 'none blocked'}\n"
            f"config {raw['h']}, version {raw['v']}"
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return f"(undecodable inputs: {text[:80]})"
