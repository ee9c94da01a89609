"""The SLO policy: evidence before action.

Each SLO reading becomes a verdict (healthy, breach or inconclusive) carrying its numbers;
`propose` turns the verdicts into a rollback, a promotion or a hold before any guard runs.
`gmail_policy` keeps the original system's entry point on top of the same two functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.model import (
    Action,
    Decision,
    Deferred,
    FlagState,
    SloReading,
    SloSnapshot,
    SloVerdict,
    Verdict,
    describe_missing,
    format_percent,
    worst,
)
from rollout_core.stats import wilson_lower_bound

__all__ = [
    "WITHOUT_TRAFFIC",
    "Recommendation",
    "evaluate_slo",
    "evaluate_slos",
    "format_ratio",
    "gmail_policy",
    "gmail_spec",
    "has_traffic_evidence",
    "next_step",
    "propose",
    "safe_step",
    "slo_title",
]

_SECONDS_HINTS = ("latency", "duration", "seconds")
_ACRONYMS = {"oauth": "OAuth", "api": "API", "http": "HTTP", "grpc": "gRPC", "db": "DB"}


def format_ratio(ratio: float) -> str:
    """`0.024` -> "2.4%", `0.01` -> "1.0%", `0.0004` -> "0.04%"."""
    percent = ratio * 100
    return f"{percent:.1f}%" if percent == 0 or abs(percent) >= 0.1 else f"{percent:.2g}%"


def _format_value(slo: SloSpec, value: float) -> str:
    if slo.kind == "ratio":
        return format_ratio(value)
    if value.is_integer() and abs(value) < 1e15:
        text = str(int(value))
    else:
        text = f"{value:.3g}"
    is_seconds = slo.kind == "value" and any(hint in slo.name.lower() for hint in _SECONDS_HINTS)
    return f"{text}s" if is_seconds else text


def _count(samples: float) -> str:
    return f"n={samples:.0f}"


def _verdict(
    slo: SloSpec,
    verdict: Verdict,
    reading: SloReading,
    text: Callable[..., str],
    *args: Any,
    bound: float | None = None,
) -> SloVerdict:
    """The verdict; its message ("error_rate 2.4% (...) > max 1.0%: breach") is `text(*args)`
    formatted when first read, since a replay never reads most of them."""
    return SloVerdict(
        name=slo.name,
        verdict=verdict,
        value=reading.value,
        limit=slo.max,
        samples=reading.samples,
        bound=bound,
        message=Deferred(_message, slo.name, verdict, text, args),
        error=reading.error,
    )


def _message(name: str, verdict: Verdict, text: Callable[..., str], args: tuple[Any, ...]) -> str:
    return f"{name} {text(*args)}: {verdict}"


def _as_is(text: str) -> str:
    return text


def _valid_samples(samples: float | None) -> float | None:
    """The sample count when it is a usable count (finite, not negative), else None."""
    return samples if samples is not None and math.isfinite(samples) and samples >= 0 else None


def _no_count(samples: float | None) -> str:
    """Why a sample count is no count: absent, NaN, ±Inf or negative."""
    if samples is None:
        return "no request count"
    if not math.isfinite(samples):
        return f"no request count ({describe_missing(samples).removeprefix('no data (')}"
    return f"no request count (n={samples:g} is negative)"


def _impossible(value: float | None, what: str) -> str:
    return f"no data ({what} {value:g} is negative; check the query)"


def _query_failed(slo: SloSpec, reading: SloReading) -> SloVerdict:
    assert reading.error is not None
    kind = "transient query error" if reading.error.transient else "query error"
    # formatted now: rare, and the error's series labels are mappings, which could change
    return _verdict(slo, Verdict.INCONCLUSIVE, reading, _as_is, f"{kind}: {reading.error}")


def _ratio_uncounted(ratio: float, samples: float | None) -> str:
    return f"{format_ratio(ratio)} ({_no_count(samples)})"


def _ratio_point(ratio: float, sign: str, limit: float) -> str:
    return f"{format_ratio(ratio)} {sign} max {format_ratio(limit)}"


def _ratio_evidence(ratio: float, samples: float, bound: float, sign: str, limit: float) -> str:
    evidence = f"({_count(samples)}, 99% lower bound {format_ratio(bound)})"
    return f"{format_ratio(ratio)} {evidence} {sign} max {format_ratio(limit)}"


def _ratio_thin(ratio: float, samples: float, min_samples: int) -> str:
    return f"{format_ratio(ratio)} ({_count(samples)} < min_samples {min_samples})"


def _ratio_unsure(ratio: float, samples: float, bound: float, limit: float) -> str:
    return f"{_ratio_evidence(ratio, samples, bound, '>', limit)}, but the lower bound is not"


def _evaluate_ratio(slo: SloSpec, reading: SloReading) -> SloVerdict:
    inconclusive, min_samples = Verdict.INCONCLUSIVE, slo.min_samples or 0
    ratio, limit = reading.value, slo.max
    if reading.samples == 0:
        return _verdict(slo, inconclusive, reading, _as_is, "no traffic (n=0)")
    if ratio is None or not math.isfinite(ratio):
        return _verdict(slo, inconclusive, reading, describe_missing, ratio)
    if ratio < 0:  # a negative error count: an impossible reading is no evidence
        return _verdict(slo, inconclusive, reading, _impossible, ratio, "ratio")
    samples = _valid_samples(reading.samples)
    if samples is None:
        if min_samples > 0:
            return _verdict(slo, inconclusive, reading, _ratio_uncounted, ratio, reading.samples)
        # min_samples 0 without a count: the original API, judged on the point estimate alone
        is_breach = ratio > limit
        verdict, sign = (Verdict.BREACH, ">") if is_breach else (Verdict.HEALTHY, "<=")
        return _verdict(slo, verdict, reading, _ratio_point, ratio, sign, limit)
    bound = wilson_lower_bound(ratio, samples)
    if bound > limit:
        return _verdict(
            slo,
            Verdict.BREACH,
            reading,
            _ratio_evidence,
            ratio,
            samples,
            bound,
            ">",
            limit,
            bound=bound,
        )
    if samples < min_samples:
        return _verdict(
            slo, inconclusive, reading, _ratio_thin, ratio, samples, min_samples, bound=bound
        )
    if ratio <= limit:
        return _verdict(
            slo,
            Verdict.HEALTHY,
            reading,
            _ratio_evidence,
            ratio,
            samples,
            bound,
            "<=",
            limit,
            bound=bound,
        )
    return _verdict(
        slo, inconclusive, reading, _ratio_unsure, ratio, samples, bound, limit, bound=bound
    )


def _scalar_thin(slo: SloSpec, value: float, samples: float | None, min_samples: int) -> str:
    count = _count(samples) if samples is not None else "n unknown"
    return f"{_format_value(slo, value)} ({count} < min_samples {min_samples})"


def _scalar_judged(
    slo: SloSpec, value: float, note: str, samples: float | None, is_breach: bool
) -> str:
    if samples is not None and not note:
        note = f" ({_count(samples)})"
    sign = ">" if is_breach else "<="
    return f"{_format_value(slo, value)}{note} {sign} max {_format_value(slo, slo.max)}"


def _evaluate_scalar(slo: SloSpec, reading: SloReading) -> SloVerdict:
    """Value SLOs (latency) and count SLOs (failures in a window)."""
    min_samples, is_count = slo.min_samples or 0, slo.kind == "count"
    raw = reading.value
    if raw is None and is_count and slo.absent_is_zero:
        # an empty result (no series) counted nothing; NaN or ±Inf is never read as 0
        reading = SloReading(reading.name, 0.0, reading.samples)
        note = " (no series, read as 0)"
    elif raw is None or not math.isfinite(raw):
        return _verdict(slo, Verdict.INCONCLUSIVE, reading, describe_missing, raw)
    elif is_count and raw < 0:  # never fewer than no failures
        return _verdict(slo, Verdict.INCONCLUSIVE, reading, _impossible, raw, "count")
    else:
        note = ""
    samples = _valid_samples(reading.samples)
    value = float(reading.value or 0.0)
    is_breach = value > slo.max
    has_evidence = min_samples == 0 or (samples is not None and samples >= min_samples)
    # a count above max is evidence on its own; a value needs enough samples either way
    if not has_evidence and not (is_count and is_breach):
        return _verdict(
            slo, Verdict.INCONCLUSIVE, reading, _scalar_thin, slo, value, samples, min_samples
        )
    verdict = Verdict.BREACH if is_breach else Verdict.HEALTHY
    return _verdict(slo, verdict, reading, _scalar_judged, slo, value, note, samples, is_breach)


def evaluate_slo(slo: SloSpec, reading: SloReading) -> SloVerdict:
    """One SLO's verdict with its numbers; a query error, NaN or missing data is never healthy."""
    if reading.error is not None:
        return _query_failed(slo, reading)
    if slo.kind == "ratio":
        return _evaluate_ratio(slo, reading)
    return _evaluate_scalar(slo, reading)


def evaluate_slos(spec: FeatureSpec, snapshot: SloSnapshot) -> tuple[SloVerdict, ...]:
    """Every configured SLO's verdict, in configuration order; an absent reading is missing."""
    return tuple(evaluate_slo(slo, snapshot.reading(slo.name)) for slo in spec.slos)


def next_step(spec: FeatureSpec, percent: float) -> float | None:
    """The first ladder step strictly above `percent` (25 -> 50), or None at the top."""
    return next((float(step) for step in spec.ladder if step > percent), None)


def safe_step(spec: FeatureSpec, percent: float) -> float:
    """Where a breach sends the rollout: `safe_percent` when above it, else 0."""
    return float(spec.safe_percent) if percent > spec.safe_percent else 0.0


def slo_title(name: str) -> str:
    """`oauth_refresh_failures` -> "OAuth refresh failures": the SLO as reasons name it."""
    return " ".join(_ACRONYMS.get(word.lower(), word) for word in name.split("_") if word)


def _promotion_headline(current: float, target: float) -> str:
    step = f"{format_percent(current)} -> {format_percent(target)}"
    if target >= 100:
        return f"SLOs healthy, full rollout {step}"
    if current <= 0:
        return f"Initial canary {step}: all SLOs healthy"
    return f"SLOs healthy, ramp {step}"


def has_traffic_evidence(spec: FeatureSpec, verdicts: Sequence[SloVerdict]) -> bool:
    """True when at least one SLO with min_samples > 0 is healthy with n >= min_samples: the
    positive evidence that the feature served traffic, which every promotion needs (I1)."""
    limits = {slo.name: slo.min_samples or 0 for slo in spec.slos}
    for verdict in verdicts:
        needed, samples = limits.get(verdict.name, 0), _valid_samples(verdict.samples)
        if verdict.verdict is Verdict.HEALTHY and needed > 0 and (samples or 0) >= needed:
            return True
    return False


WITHOUT_TRAFFIC = "promoted without traffic evidence (promote_without_traffic)"


def propose(spec: FeatureSpec, state: FlagState, verdicts: Sequence[SloVerdict]) -> Decision:
    """The policy before guards: any breach rolls back whatever the other SLOs say; a
    promotion needs every SLO healthy and traffic evidence (I1); anything else holds.
    The reasons are formatted when first read (a replay reads few of them)."""
    current, overall = float(state.percent), worst([v.verdict for v in verdicts])
    deciding = tuple([v for v in verdicts if v.verdict is overall])
    action, target, case = Action.HOLD, current, "inconclusive"
    notes: tuple[str, ...] = ()
    if overall is Verdict.BREACH and current > 0:
        action, target, case = Action.ROLLBACK, safe_step(spec, current), "rollback"
    elif overall is Verdict.BREACH:
        case = "breach at 0%"
    elif overall is Verdict.HEALTHY:
        step = next_step(spec, current)
        if step is None:
            case = "full rollout"
        elif has_traffic_evidence(spec, verdicts):
            action, target, case = Action.PROMOTE, step, "promote"
        elif spec.promote_without_traffic:
            action, target, case = Action.PROMOTE, step, "promote"
            notes = (WITHOUT_TRAFFIC,)
        else:
            case = "no traffic evidence"

    return Decision(
        feature=spec.name,
        action=action,
        from_percent=current,
        to_percent=target,
        reasons=Deferred(_reasons, case, current, target, deciding, notes),
        verdicts=tuple(verdicts),
        proposed=action,
        proposed_percent=target,
    )


def _reasons(
    case: str, current: float, target: float, deciding: Sequence[SloVerdict], notes: tuple[str, ...]
) -> tuple[str, ...]:
    headline = _headline(case, current, target, deciding)
    return (headline, *notes, *(v.message for v in deciding))


def _headline(case: str, current: float, target: float, deciding: Sequence[SloVerdict]) -> str:
    """The first reason of a proposal, e.g. "Rollback 50% -> 10% on Error rate breach"."""
    titles = ", ".join(slo_title(v.name) for v in deciding)
    if case == "rollback":
        return f"Rollback {format_percent(current)} -> {format_percent(target)} on {titles} breach"
    if case == "breach at 0%":
        return f"Hold at 0%: {titles} breach, nothing to roll back"
    if case == "promote":
        return _promotion_headline(current, target)
    if case == "full rollout":
        return f"Hold at {format_percent(current)}: full rollout reached"
    if case == "no traffic evidence":
        return (
            f"Hold at {format_percent(current)}: SLOs healthy but no SLO with "
            "min_samples > 0 saw enough traffic to promote"
        )
    named = ", ".join(v.name for v in deciding) or "no SLO verdicts"
    return f"Hold at {format_percent(current)}: inconclusive {named}"


class Recommendation(NamedTuple):
    """The original API's answer: where the percent should go, and why."""

    target_percent: float
    reason: str


def gmail_spec(has_request_counts: bool = True) -> FeatureSpec:
    """The original Gmail send SLOs (1% errors, p95 0.5 s, 5 OAuth refresh failures).

    Without request counts the error rate is judged as a point estimate (min_samples 0), so
    nothing shows traffic: that spec opts in with `promote_without_traffic`, named in each
    promotion's reason.
    """
    labels = 'provider="google",action="gmail.send"'
    error_rate: dict[str, Any] = {
        "name": "error_rate",
        "ratio": {
            "errors": f"sum(increase(action_error_total{{{labels}}}[5m]))",
            "total": f"sum(increase(action_exec_total{{{labels}}}[5m]))",
        },
        "max": 0.01,
        "min_samples": 200 if has_request_counts else 0,
    }
    latency_buckets = f"rate(action_latency_seconds_bucket{{{labels}}}[5m])"
    latency = f"histogram_quantile(0.95, sum({latency_buckets}) by (le))"
    oauth = 'sum(increase(oauth_events_total{provider="google",event="refresh_failed"}[15m]))'
    slos = [
        error_rate,
        {"name": "latency_p95", "query": latency, "max": 0.5},
        {"name": "oauth_refresh_failures", "kind": "count", "query": oauth, "max": 5},
    ]
    return FeatureSpec.model_validate(
        {"name": "google", "slos": slos, "promote_without_traffic": not has_request_counts}
    )


_GMAIL_SPECS = {True: gmail_spec(True), False: gmail_spec(False)}


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metrics[{key!r}] is {value!r}; expected a number or None") from None


def gmail_policy(metrics: Mapping[str, Any], current_percent: float) -> Recommendation:
    """The original entry point: keys error_rate_5m, requests_5m, latency_p95_5m and
    oauth_refresh_failures_15m; judged by `evaluate_slos` and `propose`."""
    if not 0 <= current_percent <= 100:
        raise ValueError(f"current_percent {current_percent!r} is outside 0..100")
    requests = _metric(metrics, "requests_5m")
    spec = _GMAIL_SPECS[requests is not None]
    readings = {
        "error_rate": SloReading("error_rate", _metric(metrics, "error_rate_5m"), requests),
        "latency_p95": SloReading("latency_p95", _metric(metrics, "latency_p95_5m")),
        "oauth_refresh_failures": SloReading(
            "oauth_refresh_failures", _metric(metrics, "oauth_refresh_failures_15m")
        ),
    }
    state = FlagState(feature=spec.name, percent=float(current_percent))
    decision = propose(spec, state, evaluate_slos(spec, SloSnapshot(spec.name, readings)))
    return Recommendation(decision.to_percent, decision.reason)
