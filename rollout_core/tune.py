"""`rollout tune`: SLO thresholds suggested from a feature's own history.

Healthy behaviour is estimated robustly: the median and the median absolute deviation of the
per-window readings, and windows far outside them (incidents) are set aside and counted. Then,
per SLO, a `max` above every healthy window of the history (judged exactly as the policy
judges: the Wilson lower bound for ratios), raised until the false-rollback rate per evaluation
under a binomial / Poisson model of healthy noise at the typical traffic is at most the target.
With it, the smallest regression caught with 99% probability at that traffic. A per-evaluation
rate of 0.5% would still be five false rollbacks a week at a 10-minute step; hence the
history's healthy windows must all pass, not 99.5% of them.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from rollout_core.config import FeatureSpec, SloSpec, parse_config, parse_duration
from rollout_core.errors import ConfigError
from rollout_core.replay import NO_SERIES
from rollout_core.stats import wilson_lower_bound

__all__ = [
    "DETECTION_PROBABILITY",
    "SloSuggestion",
    "binomial_tail",
    "config_text",
    "suggest",
]

DETECTION_PROBABILITY = 0.99
_MAD_SCALE = 1.4826  # MAD to standard deviation, for normal noise
_FENCE = 6.0  # windows further than this many spreads above the median are incidents
_MIN_TRAFFIC = 30  # requests per window below which an error ratio says little
_MARGIN = 1.1  # above the worst healthy window seen


@dataclass(frozen=True)
class SloSuggestion:
    name: str
    kind: str
    max: float
    min_samples: int
    expected_false_rollback: float
    detects: str
    current_max: float
    current_min_samples: int
    healthy: str  # the estimate of healthy behaviour, in words
    windows: int
    excluded: int  # windows set aside as incidents

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max": self.max,
            "min_samples": self.min_samples,
            "expected_false_rollback": round(self.expected_false_rollback, 6),
            "detects": self.detects,
            "kind": self.kind,
            "current": {"max": self.current_max, "min_samples": self.current_min_samples},
            "healthy": self.healthy,
            "windows": self.windows,
            "excluded_as_incidents": self.excluded,
        }


def binomial_tail(n: int, p: float, x: int) -> float:
    """P(X >= x) for X ~ Binomial(n, p), summed in log space (no scipy needed)."""
    if x <= 0:
        return 1.0
    if x > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for k in range(x, n + 1):
        log_pmf = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        term = math.exp(log_pmf + k * log_p + (n - k) * log_q)
        total += term
        if term < 1e-18 and k > n * p:
            break
    return min(total, 1.0)


def poisson_tail(mean: float, x: int) -> float:
    """P(X >= x) for X ~ Poisson(mean)."""
    if x <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    below, term = 0.0, math.exp(-mean)
    for k in range(x):
        below += term
        term *= mean / (k + 1)
    return max(0.0, 1.0 - below)


def _nice_up(value: float) -> float:
    """Rounded up to two significant digits: 0.01234 -> 0.013."""
    if value <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return float(round(math.ceil(value / scale - 1e-9) * scale, 12))


def _critical_errors(n: int, limit: float) -> int:
    """The fewest errors in n requests whose Wilson lower bound exceeds `limit` (n+1: none)."""
    low, high = 0, n + 1
    while low < high:
        mid = (low + high) // 2
        if wilson_lower_bound(mid / n, n) > limit:
            high = mid
        else:
            low = mid + 1
    return low


def _breach_probability(n: int, p: float, limit: float) -> float:
    return binomial_tail(n, p, _critical_errors(n, limit))


def _robust(values: Sequence[float]) -> tuple[float, float]:
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return median, _MAD_SCALE * mad


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _needed_windows(target: float) -> int:
    """The rule of three: with none seen in 3/target windows, the rate is below target (95%)."""
    return math.ceil(3 / target)


_RANGE = re.compile(r"\[(\d+[smhd](?:\d+[smhd])*)(?::[^\]]*)?\]")


def query_window(slo: SloSpec) -> float | None:
    """The longest range selector (`[15m]`) of the SLO's queries, in seconds; None for none."""
    spans = []
    for query in slo.queries:
        for text in _RANGE.findall(query):
            try:
                spans.append(parse_duration(text).total_seconds())
            except ValueError:
                continue
    return max(spans, default=None)


def _refuse_short(slo: SloSpec, windows: int, target: float, step_seconds: float) -> None:
    """ConfigError when the history holds too few independent windows for the target.
    Evaluations closer than the query's window overlap and are not independent: `windows`
    evaluations at a 1m step of a [10m] query count as a tenth as many."""
    needed = _needed_windows(target)
    window = query_window(slo) or step_seconds
    spacing = max(step_seconds, window)
    independent = windows if spacing == step_seconds else int(windows * step_seconds / spacing)
    if independent < needed:
        more = needed - independent
        counted = (
            f"only {independent} evaluation windows with data"
            if independent == windows
            else f"only {independent} non-overlapping windows with data ({windows} evaluations "
            f"every {step_seconds:g}s of a {window:g}s query window)"
        )
        raise ConfigError(
            f"SLO {slo.name!r}: {counted}; a false-rollback "
            f"target of {target:g} needs at least {needed}: widen the range by about "
            f"{more * spacing / 86400:.1f} days (or raise --false-rollback)"
        )


def _suggest_ratio(slo: SloSpec, rows: pd.DataFrame, target: float, step: float) -> SloSuggestion:
    # a count that is not a positive finite number is no count (the format's ±Inf, NaN, < 0)
    counted = rows["samples"].map(math.isfinite) & (rows["samples"] > 0)
    rows = rows[counted & rows["value"].map(math.isfinite)]
    ratios, counts = rows["value"].tolist(), rows["samples"].tolist()
    _refuse_short(slo, len(ratios), target, step)
    typical = int(statistics.median(counts))
    if typical < _MIN_TRAFFIC:
        raise ConfigError(
            f"SLO {slo.name!r}: the typical window has {typical} requests; an error ratio needs "
            f"at least {_MIN_TRAFFIC} per window to be told from noise: widen the SLO's query "
            "window (e.g. [15m] instead of [5m]) or wait for more traffic"
        )
    median, spread = _robust(ratios)
    healthy = [
        (r, n)
        for r, n in zip(ratios, counts, strict=True)
        if r <= median + _FENCE * max(spread, math.sqrt(max(median, 1e-6) * (1 - median) / n))
    ]
    _refuse_short(slo, len(healthy), target, step)
    bounds = sorted(wilson_lower_bound(r, n) for r, n in healthy)
    noisy = min(1.0, median + spread)  # healthy noise, over-dispersed
    # above every healthy window of the history (none of them would have rolled back), then
    # raised until the modelled rate at the typical traffic is at most the target too
    candidate = _nice_up(max(bounds[-1] * _MARGIN, median * 1.2, 1e-4))
    while True:
        empirical = sum(b > candidate for b in bounds) / len(bounds)
        modelled = _breach_probability(typical, noisy, candidate)
        if (empirical <= target and modelled <= target) or candidate >= 1:
            break
        candidate = _nice_up(candidate * 1.05)
    min_samples = _min_samples_ratio(candidate, [n for _, n in healthy])
    detect = _detectable_ratio(typical, candidate)
    factor = f"{detect / median:.1f}x error ratio ({detect:.2%})" if median > 0 else f"{detect:.2%}"
    return SloSuggestion(
        name=slo.name,
        kind="ratio",
        max=candidate,
        min_samples=min_samples,
        expected_false_rollback=max(empirical, modelled),
        detects=f"detects a {factor} at {typical} requests",
        current_max=slo.max,
        current_min_samples=slo.min_samples or 0,
        healthy=f"error ratio median {median:.3%}, spread {spread:.3%}, {typical} requests/window",
        windows=len(ratios),
        excluded=len(ratios) - len(healthy),
    )


def _detectable_ratio(n: int, limit: float) -> float:
    """The smallest true error ratio breached with 99% probability in a window of n."""
    low, high = limit, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if _breach_probability(n, mid, limit) >= DETECTION_PROBABILITY:
            high = mid
        else:
            low = mid
    return high


def _detectable_count(breach: int) -> float:
    """The smallest Poisson mean that reaches `breach` counts with 99% probability."""
    low, high = 0.0, max(1.0, 2.0 * breach)
    while poisson_tail(high, breach) < DETECTION_PROBABILITY:
        high *= 2
    for _ in range(40):
        mid = (low + high) / 2
        if poisson_tail(mid, breach) >= DETECTION_PROBABILITY:
            high = mid
        else:
            low = mid
    return high


def _min_samples_ratio(limit: float, counts: Sequence[int]) -> int:
    """The count at which a window at twice `max` is caught 99% of the time, but no more than
    the 5th percentile of healthy traffic, so promotions are rarely held for want of it."""
    ceiling = max(1, int(_quantile(counts, 0.05)))
    wanted = min(2 * limit, 1.0)
    n = 10
    while n < ceiling and _breach_probability(n, wanted, limit) < DETECTION_PROBABILITY:
        n = math.ceil(n * 1.1)
    return int(min(n, ceiling))


def _suggest_scalar(
    slo: SloSpec, rows: pd.DataFrame, target: float, step: float, absent: int
) -> SloSuggestion:
    is_count = slo.kind == "count"
    values = [v for v in rows["value"].tolist() if math.isfinite(v)]
    if is_count and slo.absent_is_zero:
        values += [0.0] * absent  # a window with no series counted none, as the policy reads it
    _refuse_short(slo, len(values), target, step)
    median, spread = _robust(values)
    floor = (3 * math.sqrt(max(median, 0)) + 3) if is_count else median * 0.5
    fence = median + max(_FENCE * spread, floor)
    healthy = [v for v in values if v <= fence]
    _refuse_short(slo, len(healthy), target, step)
    mean = statistics.fmean(healthy)
    if is_count:
        # a count that never fired has a mean of 0, not a rate of 0: model the healthy rate as
        # at least its 95% upper bound from the windows seen (rule of three: 3/n)
        model = max(mean, 3 / len(healthy))
        candidate = float(math.ceil(max(healthy)))
        while poisson_tail(model, int(candidate) + 1) > target:
            candidate += 1
        empirical = sum(v > candidate for v in healthy) / len(healthy)
        modelled = poisson_tail(model, int(candidate) + 1)
        rate = _detectable_count(int(candidate) + 1)
        shown = f"{rate / mean:.1f}x the healthy count ({rate:.1f})" if mean > 0 else f"{rate:.1f}"
        detects = f"detects {shown} per window"
        healthy_text = f"count median {median:.3g}, mean {mean:.2f} per window"
        if mean == 0:
            healthy_text = f"never fired in {len(healthy)} windows (rate below {model:.2g})"
    else:
        candidate = _nice_up(max(healthy) * _MARGIN)
        empirical = modelled = sum(v > candidate for v in healthy) / len(healthy)
        detects = f"detects any window above {candidate:g} (every window over max breaches)"
        healthy_text = f"median {median:.3g}, p99 {_quantile(healthy, 0.99):.3g}"
    return SloSuggestion(
        name=slo.name,
        kind=str(slo.kind),
        max=candidate,
        min_samples=slo.min_samples or 0,
        expected_false_rollback=max(empirical, modelled),
        detects=detects,
        current_max=slo.max,
        current_min_samples=slo.min_samples or 0,
        healthy=healthy_text,
        windows=len(values),
        excluded=len(values) - len(healthy),
    )


def suggest(
    spec: FeatureSpec,
    series: pd.DataFrame,
    target: float,
    step_seconds: float,
    ticks: int | None = None,
    units: Sequence[str] = (),
) -> list[SloSuggestion]:
    """One suggestion per SLO of `spec` from its readings in `series` (ReplaySource format),
    pooled over `units` (a segmented feature's segments, e.g. `google[eu-west]`) when given;
    ConfigError, saying how much more is needed, when history or traffic is too thin.

    Each row is one evaluation: pass the readings at each tick (`ReplaySource.readings`), whose
    `no series` rows are the windows where a count's series was absent. A series without an
    `error` column counts `ticks` (per unit) less its rows as such windows."""
    if not 0 < target < 0.5:
        raise ConfigError(f"--false-rollback {target:g} must be between 0 and 0.5, e.g. 0.005")
    names = list(units) or [spec.name]
    mine = series[series["feature"].isin(names)]
    errors = (
        mine["error"].fillna("").astype(str)
        if "error" in mine.columns
        else pd.Series("", index=mine.index)
    )
    suggestions = []
    for slo in spec.slos:
        chosen = mine["slo"] == slo.name
        rows = mine[chosen & (errors == "")].copy()  # readings, not absences or query errors
        rows["value"] = pd.to_numeric(rows["value"], errors="coerce").astype(float)
        rows["samples"] = pd.to_numeric(rows["samples"], errors="coerce").astype(float)
        if slo.kind == "ratio":
            suggestions.append(_suggest_ratio(slo, rows, target, step_seconds))
            continue
        if "error" in mine.columns:
            absent = int((chosen & (errors == NO_SERIES)).sum())
        else:
            absent = max(0, (ticks or 0) * len(names) - int(chosen.sum()))
        suggestions.append(_suggest_scalar(slo, rows, target, step_seconds, absent))
    return suggestions


# set by `expand_segments` on a segment's own spec, never written in rollouts.yaml
_INTERNAL = frozenset({"name", "parent", "segment", "segment_match", "templated_slos"})


def _yaml_value(value: Any) -> Any:
    """A spec's field as rollouts.yaml writes it: durations as `90s`, clock times as `HH:MM`,
    models as mappings without unset (None) fields, tuples as lists."""
    if isinstance(value, BaseModel):
        internal = _INTERNAL if isinstance(value, FeatureSpec) else frozenset()
        return {
            key: _yaml_value(item)
            for key, item in value
            if item is not None and key not in internal
        }
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, tuple | list):
        return [_yaml_value(item) for item in value]
    return value


def config_text(spec: FeatureSpec, suggestions: Sequence[SloSuggestion]) -> str:
    """A complete rollouts.yaml holding `spec` with only each SLO's `max` and `min_samples`
    changed; every other field is written as the spec has it, and the text is checked to load
    back as exactly that spec."""
    chosen = {s.name: s for s in suggestions}
    tuned = spec.model_copy(
        update={
            "slos": tuple(
                slo.model_copy(
                    update={
                        "max": chosen[slo.name].max,
                        "min_samples": chosen[slo.name].min_samples,
                    }
                )
                if slo.name in chosen
                else slo
                for slo in spec.slos
            )
        }
    )
    feature = _yaml_value(tuned)
    freeze = feature.get("freeze", [])
    for window, spec_window in zip(freeze, spec.freeze, strict=True):
        if spec_window.end is None:
            window["end"] = "24:00"  # None is the end of the day, not "unset"
    text = "# suggested by `rollout tune`\n" + yaml.safe_dump(
        {"features": {spec.name: feature}}, sort_keys=False, width=200, default_flow_style=None
    )
    loaded = parse_config(text, "<rollout tune suggestion>").feature(spec.name)
    if loaded != tuned.model_copy(update={"parent": None, "segment": None}):
        raise ConfigError(  # a field this writer does not know how to write: say so, never drop it
            f"the suggestion for {spec.name!r} does not load back as the feature's config "
            "with only max and min_samples changed; report this as a bug"
        )
    return text
