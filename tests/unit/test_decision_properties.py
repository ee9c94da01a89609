"""Properties of the whole decision over generated specs, flag states, readings and times."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.decision import decide
from rollout_core.guards import GUARDS
from rollout_core.model import (
    Action,
    Decision,
    FlagState,
    QueryError,
    SloReading,
    SloSnapshot,
    Verdict,
)
from rollout_core.policy import WITHOUT_TRAFFIC, evaluate_slo, safe_step

START = datetime(2025, 1, 1, tzinfo=UTC)
NOW = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CLOCKS = st.sampled_from(["00:00", "06:00", "09:30", "17:30", "22:00", "23:59"])
NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
MAYBE_NAN = st.one_of(st.none(), NOT_FINITE, st.floats(0, 2), st.floats(0, 2e4))
SAMPLES = st.one_of(st.none(), NOT_FINITE, st.just(0.0), st.just(-5.0), st.floats(0, 1e5))
QUERY_ERRORS = st.one_of(
    st.none(),
    st.builds(
        QueryError,
        slo=st.just("x"),
        query=st.just("q"),
        kind=st.sampled_from(["bad_data", "execution", "timeout", "several_series"]),
        detail=st.just("made up"),
        transient=st.booleans(),
    ),
)
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
MAX_RATIOS, MAX_LATENCIES, MAX_COUNTS = st.floats(0, 0.2), st.floats(0.01, 2), st.integers(0, 20)
SECONDS_AGO = st.one_of(st.none(), st.integers(-600, 3 * 86400))
ANY_PERCENT, INDEX = st.floats(0, 100), st.integers(0, 10)
GUARDS_THAT_STOP_EVERYTHING = {"not_initialised", "disabled", "paused"}
OPT_IN = {"promote_without_traffic": True}


@st.composite
def ladders(draw: st.DrawFn) -> list[float]:
    steps = draw(st.lists(st.integers(1, 9999), unique=True, max_size=6))
    return [0.0, *sorted(step / 100 for step in steps), 100.0]


@st.composite
def freeze_windows(draw: st.DrawFn) -> dict[str, Any]:
    start, end = draw(CLOCKS), draw(st.one_of(st.just("24:00"), CLOCKS))
    if start == end:
        end = "24:00"
    days = draw(st.lists(st.sampled_from(DAYS), min_size=1, unique=True))
    zone = draw(ZONES)
    return {"days": days, "start": start, "end": end, "tz": zone}


@st.composite
def specs(draw: st.DrawFn) -> FeatureSpec:
    ladder = draw(ladders())
    min_samples = draw(st.integers(0, 1000))
    slos = [
        {
            "name": "error_rate",
            "ratio": {"errors": "e", "total": "t"},
            "max": draw(MAX_RATIOS),
            "min_samples": min_samples,
        },
        {"name": "latency_p95", "query": "p95", "max": draw(MAX_LATENCIES)},
        {
            "name": "oauth_refresh_failures",
            "kind": "count",
            "query": "f",
            "max": draw(MAX_COUNTS),
            "absent_is_zero": draw(st.booleans()),
        },
    ]
    return FeatureSpec.model_validate(
        {
            "name": "google",
            "ladder": ladder,
            "safe_percent": pick(draw(INDEX), ladder[:-1], draw(st.floats(0, 99))),
            "dwell": draw(st.integers(0, 7200)),
            "cooldown": draw(st.integers(0, 7200)),
            "freeze": draw(st.lists(freeze_windows(), max_size=2)),
            "slos": slos,
            "promote_without_traffic": min_samples == 0 or draw(st.booleans()),
        }
    )


def pick(index: int, choices: list[float], otherwise: float) -> float:
    """A choice by index, or `otherwise` past the end: cheaper than a sampled_from built anew
    for every example."""
    return choices[index] if index < len(choices) else otherwise


def seconds_before(now: datetime, seconds: int | None) -> datetime | None:
    return None if seconds is None else now - timedelta(seconds=seconds)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[FeatureSpec, FlagState, SloSnapshot, datetime]:
    spec, now = draw(specs()), draw(NOW)
    percent = pick(draw(INDEX), list(spec.ladder), draw(ANY_PERCENT))
    state = FlagState(
        "google",
        percent,
        enabled=draw(st.booleans()),
        paused=draw(st.booleans()),
        exists=draw(st.booleans()),
        last_change_time=seconds_before(now, draw(SECONDS_AGO)),
        last_rollback_time=seconds_before(now, draw(SECONDS_AGO)),
    )
    readings = {
        slo.name: SloReading(slo.name, draw(MAYBE_NAN), draw(SAMPLES), draw(QUERY_ERRORS))
        for slo in spec.slos
        if draw(st.integers(0, 9)) > 0  # now and then a reading is absent altogether
    }
    return spec, state, SloSnapshot("google", readings), now


def is_unhindered(state: FlagState) -> bool:
    return state.exists and state.enabled and not state.paused


def blocking(decision: Decision) -> set[str]:
    return {result.name for result in decision.guards if result.blocks}


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_no_promotion_unless_every_slo_is_healthy_and_every_guard_passes(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    decision = decide(*scenario)
    if decision.action is Action.PROMOTE:
        assert all(v.verdict is Verdict.HEALTHY for v in decision.verdicts)
        assert len(decision.verdicts) == len(scenario[0].slos)
        assert blocking(decision) == set()
        assert decision.to_percent > decision.from_percent


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_no_promotion_without_traffic_evidence_unless_the_feature_opts_in_and_says_so(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    spec, _, snapshot, _ = scenario
    decision = decide(*scenario)
    if decision.action is not Action.PROMOTE:
        return
    error_rate = snapshot.reading("error_rate")
    needed = spec.slos[0].min_samples or 0
    has_traffic = (
        needed > 0
        and error_rate.error is None
        and error_rate.samples is not None
        and math.isfinite(error_rate.samples)
        and error_rate.samples >= needed
    )
    assert has_traffic or (spec.promote_without_traffic and WITHOUT_TRAFFIC in decision.reasons)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_query_error_is_never_healthy_and_never_stops_a_rollback(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    _, state, snapshot, _ = scenario
    decision = decide(*scenario)
    for verdict in decision.verdicts:
        if snapshot.reading(verdict.name).error is not None:
            assert verdict.verdict is Verdict.INCONCLUSIVE
    if decision.proposed is not Action.ROLLBACK and state.percent > 0:
        assert not any(v.verdict is Verdict.BREACH for v in decision.verdicts)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_a_breach_always_rolls_back_unless_stopped_or_already_at_zero(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    spec, state, _, _ = scenario
    decision = decide(*scenario)
    if any(v.verdict is Verdict.BREACH for v in decision.verdicts) and state.percent > 0:
        if is_unhindered(state):
            assert decision.action is Action.ROLLBACK
            assert decision.to_percent == safe_step(spec, state.percent) < state.percent
        else:
            assert decision.action is Action.HOLD
            assert decision.guard in GUARDS_THAT_STOP_EVERYTHING
            assert decision.proposed is Action.ROLLBACK


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_rollback_is_never_delayed_by_dwell_cooldown_or_freeze(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    decision = decide(*scenario)
    if decision.proposed is Action.ROLLBACK:
        assert blocking(decision) <= GUARDS_THAT_STOP_EVERYTHING
        assert (decision.action is Action.ROLLBACK) == is_unhindered(scenario[1])


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_the_target_is_a_ladder_step_the_safe_step_or_unchanged(
    scenario: tuple[FeatureSpec, FlagState, SloSnapshot, datetime],
) -> None:
    spec, state, _, _ = scenario
    decision = decide(*scenario)
    allowed = {*spec.ladder, float(spec.safe_percent), 0.0, state.percent}
    assert decision.to_percent in allowed
    assert decision.proposed_percent in allowed
    if decision.action is Action.HOLD:
        assert decision.to_percent == state.percent
    assert len(decision.guards) == len(GUARDS)


@settings(max_examples=300, deadline=None)
@given(
    slo_kind=st.sampled_from(["ratio", "value", "count"]),
    samples=SAMPLES,
    limit=st.floats(0, 1),
    min_samples=st.integers(0, 500),
)
def test_nan_never_yields_healthy(
    slo_kind: str, samples: float | None, limit: float, min_samples: int
) -> None:
    fields: dict[str, Any] = {"name": "x", "max": limit, "min_samples": min_samples}
    if slo_kind == "ratio":
        fields["ratio"] = {"errors": "e", "total": "t"}
    else:
        fields.update(query="q", kind=slo_kind, samples="n" if min_samples else None)
    slo = SloSpec.model_validate(fields)
    for value in (math.nan, math.inf, -math.inf):
        verdict = evaluate_slo(slo, SloReading("x", value, samples))
        assert verdict.verdict is Verdict.INCONCLUSIVE
        assert "no data" in verdict.message or "no traffic" in verdict.message
    if min_samples > 0:
        for count in (math.nan, math.inf, -1.0, None):
            reading = SloReading("x", 0.0, count)
            assert evaluate_slo(slo, reading).verdict is not Verdict.HEALTHY


def test_decide_rejects_a_naive_now() -> None:
    spec = FeatureSpec.model_validate(
        {"name": "google", "slos": [{"name": "x", "query": "q", "max": 1}], **OPT_IN}
    )
    with pytest.raises(ValueError, match="no time zone"):
        decide(spec, FlagState("google"), SloSnapshot("google", {}), datetime(2025, 1, 1))


def test_decide_rejects_a_state_of_another_feature() -> None:
    spec = FeatureSpec.model_validate(
        {"name": "google", "slos": [{"name": "x", "query": "q", "max": 1}], **OPT_IN}
    )
    with pytest.raises(ValueError, match="'outlook'"):
        decide(spec, FlagState("outlook"), SloSnapshot("google", {}), START)


def test_decide_composes_policy_and_guards() -> None:
    spec = FeatureSpec.model_validate(
        {"name": "google", "slos": [{"name": "latency_p95", "query": "q", "max": 0.5}], **OPT_IN}
    )
    snapshot = SloSnapshot("google", {"latency_p95": SloReading("latency_p95", 0.2)})
    state = FlagState("google", 10, last_change_time=START - timedelta(minutes=5))
    held = decide(spec, state, snapshot, START)
    assert (held.action, held.proposed, held.guard) == (Action.HOLD, Action.PROMOTE, "dwell")
    later = decide(spec, state, snapshot, START + timedelta(minutes=10))
    assert (later.action, later.to_percent) == (Action.PROMOTE, 50)
    assert later.reasons == (
        "SLOs healthy, ramp 10% -> 50%",
        WITHOUT_TRAFFIC,
        "latency_p95 0.2s <= max 0.5s: healthy",
    )
