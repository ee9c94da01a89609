"""The inputs of one decision, as the compact JSON each controller audit entry carries.

Enough to replay the decision through today's policy and guards (`rollout explain`): every SLO
reading with its n, threshold, kind and verdict; the flag state read; the guard states; the
rules the guards used (the ladder by its hash and the steps around the flag's percent); the
config's content hash and the project version. About 600 bytes for three SLOs, whatever the
ladder. Keys are short on purpose; `DecisionInputs.from_json` is the reader.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

from rollout_core.abort import ALERT_VERDICT_PREFIX
from rollout_core.config import FeatureSpec
from rollout_core.model import (
    Action,
    Decision,
    FlagState,
    QueryError,
    SloReading,
    SloSnapshot,
    Verdict,
)

__all__ = [
    "PROJECT_VERSION",
    "DecisionInputs",
    "NewerInputs",
    "RecordedSlo",
    "decision_inputs",
    "describe_inputs",
    "ladder_rules",
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


def spec_rules(spec: FeatureSpec, percent: float) -> dict[str, Any]:
    """The guard and ladder rules, so a differing replay can name the one that changed. The
    ladder is recorded by its content hash, its length and the steps either side of
    `percent` (the flag's), never whole: an entry stays small on a 0.1% ladder (1,001 steps)."""
    return {
        **ladder_rules(spec.ladder, percent),
        "safe_percent": float(spec.safe_percent),
        "dwell": spec.dwell.total_seconds(),
        "cooldown": spec.cooldown.total_seconds(),
        "freeze": len(spec.freeze),
    }


def ladder_rules(ladder: tuple[float, ...], percent: float) -> dict[str, Any]:
    """`ladder_hash` (12 hex digits), `ladder_steps` and `ladder_near`: the steps just below and
    just above `percent` (null past either end), the ones a promotion or a hold there reads."""
    below = max((float(step) for step in ladder if step < percent), default=None)
    above = min((float(step) for step in ladder if step > percent), default=None)
    return {
        "ladder_hash": _ladder_hash(tuple(ladder)),
        "ladder_steps": len(ladder),
        "ladder_near": [below, above],
    }


@lru_cache(maxsize=1024)
def _ladder_hash(ladder: tuple[float, ...]) -> str:
    text = json.dumps([float(step) for step in ladder], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Inf" if value > 0 else "-Inf")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any, where: str = "time") -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{where} is {text!r:.80}; expected an ISO-8601 time or null")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
        """Decode an entry's `inputs` field, checking every part; ValueError names what is
        wrong (NewerInputs: written by a newer version, which this one could misread)."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise _undecodable(f"not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise _undecodable(f"a {type(raw).__name__}, not an object")
        version = raw.get("v")
        if isinstance(version, str) and _is_newer(version, PROJECT_VERSION):
            raise NewerInputs(
                f"its inputs were written by rollout-controller {version}, newer than this "
                f"{PROJECT_VERSION}: they may carry fields this version would misread, so it "
                f"does not judge them; explain this entry with {version} or later"
            )
        try:
            return cls._decode(feature, raw)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _undecodable(f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _decode(cls, feature: str, raw: dict[str, Any]) -> DecisionInputs:
        flag = _list(raw["f"], "f", (7, 8))
        state = FlagState(
            feature,
            percent=_percent(flag[0], "f[0] (the flag's percent)"),
            enabled=_bool(flag[1], "f[1] (enabled)"),
            internal_only=_bool(flag[2], "f[2] (internal_only)"),
            paused=_bool(flag[3], "f[3] (paused)"),
            last_change_time=_parse_time(flag[4], "f[4] (last_change_time)"),
            last_percent=None if flag[5] is None else _percent(flag[5], "f[5] (last_percent)"),
            last_rollback_time=_parse_time(flag[6], "f[6] (last_rollback_time)"),
            exists=_bool(flag[7], "f[7] (exists)") if len(flag) > 7 else True,
        )
        slos = tuple(_recorded_slo(row, index) for index, row in enumerate(_list(raw["s"], "s")))
        guards = tuple(_guard(item, index) for index, item in enumerate(_list(raw["g"], "g")))
        rules = raw.get("c", {})
        if not isinstance(rules, dict):
            raise ValueError(f"c is {rules!r:.80}; expected an object of rules")
        proposed, action, to_percent = _list(raw["d"], "d", (3,))
        return cls(
            version=_text(raw["v"], "v"),
            config_hash=_text(raw["h"], "h"),
            state=state,
            slos=slos,
            guards=guards,
            rules=dict(rules),
            proposed=_choice(proposed, "d[0] (proposed)", _ACTIONS),
            action=_choice(action, "d[1] (action)", _ACTIONS),
            to_percent=_percent(to_percent, "d[2] (to_percent)"),
        )


class NewerInputs(ValueError):
    """An entry's inputs written by a newer version of the project than this one."""


_ACTIONS = tuple(str(action) for action in Action)
_VERDICTS = tuple(str(verdict) for verdict in Verdict)
_SPECIAL = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}


def _undecodable(why: str) -> ValueError:
    return ValueError(
        f"the entry's inputs do not decode ({why}); expected the compact JSON written by "
        "rollout_core.decision_inputs: a corrupt entry, nothing to replay"
    )


def _version(text: str) -> tuple[int, ...] | None:
    """`0.1.0` -> (0, 1, 0); None for what is not a release number (`unknown`)."""
    found = re.match(r"(\d+(?:\.\d+)*)", text.strip())
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def _is_newer(version: str, than: str) -> bool:
    theirs, ours = _version(version), _version(than)
    return theirs is not None and ours is not None and theirs > ours


def _list(value: Any, where: str, lengths: tuple[int, ...] = ()) -> list[Any]:
    if not isinstance(value, list) or (lengths and len(value) not in lengths):
        expected = f" of {' or '.join(map(str, lengths))} items" if lengths else ""
        raise ValueError(f"{where} is {value!r:.80}; expected a list{expected}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} is {value!r:.80}; expected a string")
    return value


def _choice(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{where} is {value!r:.80}; expected one of {', '.join(allowed)}")
    return str(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} is {value!r:.80}; expected true or false")
    return value


def _reading(value: Any, where: str) -> float | None:
    """A recorded number: null, a JSON number, or "NaN" / "Inf" / "-Inf" as written."""
    if value is None:
        return None
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} is {value!r:.80}; expected a number, NaN, Inf or null")
    return float(value)


def _percent(value: Any, where: str) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not 0 <= number <= 100:  # NaN fails the comparison too
        raise ValueError(f"{where} is {value!r:.80}; expected a percent in 0..100")
    return float(number)


def _guard(item: Any, index: int) -> tuple[str, bool]:
    name, blocks = _list(item, f"g[{index}]", (2,))
    return _text(name, f"g[{index}][0] (guard)"), _bool(blocks, f"g[{index}][1] (blocks)")


def _recorded_slo(row: Any, index: int) -> RecordedSlo:
    where = f"s[{index}]"
    row = _list(row, where, (7, 9))
    name = _text(row[0], f"{where}[0] (name)")
    limit = _reading(row[4], f"{where}[4] (max)")
    is_alert = name.startswith(ALERT_VERDICT_PREFIX)
    if limit is None or (not is_alert and not math.isfinite(limit)):
        raise ValueError(f"{where}[4] (max of {name!r}) is {row[4]!r:.80}; expected a number")
    min_samples = row[5]
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise ValueError(f"{where}[5] (min_samples of {name!r}) is {min_samples!r:.80}")
    return RecordedSlo(
        name=name,
        kind=_text(row[1], f"{where}[1] (kind)"),
        value=_reading(row[2], f"{where}[2] (value of {name!r})"),
        samples=_reading(row[3], f"{where}[3] (samples of {name!r})"),
        max=limit,
        min_samples=min_samples,
        verdict=_choice(row[6], f"{where}[6] (verdict of {name!r})", _VERDICTS),
        error_kind=_text(row[7], f"{where}[7] (error kind)") if len(row) > 7 else None,
        transient=_bool(row[8], f"{where}[8] (transient)") if len(row) > 7 else False,
    )


def decision_inputs(
    spec: FeatureSpec, state: FlagState, decision: Decision, snapshot: SloSnapshot | None = None
) -> str:
    """The compact JSON of what `decision` was made from (see the module docstring).

    `snapshot`: the readings the verdicts were made from. Each SLO's value and n are recorded
    as read, so an absent count series stays absent (null), not the 0 the policy read it as
    under `absent_is_zero`: a replay under today's configuration then judges the absence
    itself. Without it, the verdicts' values are recorded."""
    kinds = {slo.name: slo for slo in spec.slos}
    slos = []
    for verdict in decision.verdicts:
        slo = kinds.get(verdict.name)
        is_alert = slo is None and verdict.name.startswith(ALERT_VERDICT_PREFIX)
        value, samples = verdict.value, verdict.samples
        if snapshot is not None and slo is not None:
            read = snapshot.reading(verdict.name)
            value, samples = read.value, read.samples
        row: list[Any] = [
            verdict.name,
            slo.kind if slo is not None else ("alert" if is_alert else ""),
            _number(value),
            _number(samples),
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
        "c": spec_rules(spec, state.percent),
        "d": [str(decision.proposed or decision.action), str(decision.action), decision.to_percent],
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def describe_inputs(text: str) -> str:
    """One line per part, for `rollout audit --verbose`: the readings, the flag, the guards."""
    if not text:
        return ""
    try:
        raw = json.loads(text)
        readings = "; ".join(_describe_row(row) for row in raw["s"])
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


def _describe_row(row: list[Any]) -> str:
    if str(row[0]).startswith(ALERT_VERDICT_PREFIX):  # a fast abort's alert
        value = f" (value {row[2]})" if row[2] is not None else ""
        return f"{row[0]} firing{value}: {row[6]}"
    value = "absent" if row[2] is None else row[2]  # no series: recorded as read
    return f"{row[0]} {value} (n={row[3]}, {row[1]}, max {row[4]}, min_samples {row[5]}): {row[6]}"
