"""Decision inputs (what each audit entry records), explain's replay of them, and tune's
threshold suggestions on generated histories."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from rollout_core.backtest import backtest
from rollout_core.config import FeatureSpec, SloSpec, parse_config
from rollout_core.controller import check_all_guards, evaluate_all
from rollout_core.decision_inputs import DecisionInputs, describe_inputs
from rollout_core.errors import ConfigError
from rollout_core.explain import explain_inputs
from rollout_core.model import Decision, FlagState, QueryError, SloReading, SloSnapshot
from rollout_core.replay import ReplaySource
from rollout_core.tune import binomial_tail, config_text, poisson_tail, suggest

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SPEC = FeatureSpec(
    name="google",
    slos=(
        SloSpec(name="error_rate", ratio={"errors": "e", "total": "t"}, max=0.01),
        SloSpec(name="latency_p95", query="l", max=0.5),
        SloSpec(name="oauth_refresh_failures", kind="count", query="o", max=5),
    ),
)


def decide(
    spec: FeatureSpec, state: FlagState, readings: dict[str, SloReading]
) -> Decision | object:
    snapshot = SloSnapshot(spec.name, readings, AT)
    proposals = evaluate_all([spec], {spec.name: snapshot}, {spec.name: state})
    return check_all_guards([spec], {spec.name: state}, proposals, AT)[spec.name]


READINGS = {
    "error_rate": SloReading("error_rate", 0.04, 900.0),
    "latency_p95": SloReading("latency_p95", float("nan")),
    "oauth_refresh_failures": SloReading(
        "oauth_refresh_failures",
        None,
        None,
        QueryError("oauth_refresh_failures", "o", "timeout", "slow", transient=True),
    ),
}
STATE = FlagState(
    "google",
    percent=50.0,
    last_change_time=AT - timedelta(minutes=3),
    last_percent=10.0,
    last_rollback_time=AT - timedelta(days=2),
)


def test_a_change_carries_its_inputs_well_under_two_kilobytes() -> None:
    decision = decide(SPEC, STATE, READINGS)

    assert isinstance(decision, Decision) and decision.action == "rollback"
    assert 0 < len(decision.inputs.encode()) < 1024
    body = json.loads(decision.inputs)
    assert body["s"][0][:7] == ["error_rate", "ratio", 0.04, 900.0, 0.01, 200, "breach"]
    assert body["s"][1][2] == "NaN"  # strict JSON, yet NaN stays NaN
    assert body["s"][2][7:] == ["timeout", True]
    shown = describe_inputs(decision.inputs)
    assert "error_rate 0.04 (n=900.0, ratio, max 0.01, min_samples 200): breach" in shown
    assert "guards: none blocked" in shown  # a rollback is never held by the dwell


def test_a_hold_carries_no_inputs_since_holds_are_not_audited() -> None:
    healthy = {"error_rate": SloReading("error_rate", 0.001, 900.0)}
    decision = decide(SPEC, STATE, healthy)  # inconclusive latency: a hold

    assert isinstance(decision, Decision) and decision.action == "hold"
    assert decision.inputs == ""


def test_explain_reproduces_a_decision_from_its_recorded_inputs() -> None:
    decision = decide(SPEC, STATE, READINGS)
    assert isinstance(decision, Decision)
    inputs = DecisionInputs.from_json("google", decision.inputs)

    explanation = explain_inputs(inputs, SPEC, AT)

    assert explanation.reproduces
    assert explanation.replayed["action"] == "rollback" and explanation.differences == ()


def test_explain_names_the_threshold_that_changed_when_today_differs() -> None:
    decision = decide(SPEC, STATE, READINGS)
    assert isinstance(decision, Decision)
    inputs = DecisionInputs.from_json("google", decision.inputs)
    lenient = SPEC.model_copy(
        update={"slos": (SPEC.slos[0].model_copy(update={"max": 0.1}), *SPEC.slos[1:])}
    )

    explanation = explain_inputs(inputs, lenient, AT)

    assert not explanation.reproduces
    assert "SLO 'error_rate': max changed 0.01 -> 0.1" in explanation.differences
    assert "SLO 'error_rate': verdict breach then, healthy today" in explanation.differences


def test_explain_names_a_guard_rule_that_changed() -> None:
    healthy = {
        "error_rate": SloReading("error_rate", 0.001, 900.0),
        "latency_p95": SloReading("latency_p95", 0.2),
        "oauth_refresh_failures": SloReading("oauth_refresh_failures", 0.0),
    }
    state = FlagState("google", percent=10.0, last_change_time=AT - timedelta(minutes=20))
    decision = decide(SPEC, state, healthy)
    assert isinstance(decision, Decision) and decision.action == "promote"
    longer = SPEC.model_copy(update={"dwell": timedelta(hours=1)})

    explanation = explain_inputs(DecisionInputs.from_json("google", decision.inputs), longer, AT)

    assert not explanation.reproduces
    assert "dwell changed 900.0 -> 3600.0" in explanation.differences
    assert "guard 'dwell' blocks today, not then" in explanation.differences


def test_undecodable_inputs_say_what_was_expected() -> None:
    with pytest.raises(ValueError, match="compact JSON written by"):
        DecisionInputs.from_json("google", '{"v": 1}')


def generated(days: int, seed: int = 3) -> pd.DataFrame:
    """Ten-minute readings: noisy healthy error ratios, a 5% incident on the last day."""
    rng = random.Random(seed)
    rows = []
    start = AT - timedelta(days=days)
    for tick in range(days * 144 + 1):
        at = start + timedelta(minutes=10 * tick)
        n = rng.randint(800, 1200)
        p = 0.05 if tick > days * 144 - 12 else rng.uniform(0.002, 0.006)
        errors = sum(rng.random() < p for _ in range(n))
        rows += [
            (at.isoformat(), "google", "error_rate", errors / n, float(n)),
            (at.isoformat(), "google", "latency_p95", rng.uniform(0.1, 0.2), math.nan),
            (at.isoformat(), "google", "oauth_refresh_failures", float(rng.random() < 0.1), 0.0),
        ]
    return pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])


def test_explain_reproduces_every_decision_of_a_generated_history() -> None:
    frame = generated(days=2)
    start = AT - timedelta(days=2)
    result = backtest(
        [SPEC], ReplaySource(frame), start, AT, timedelta(minutes=10), record_inputs=True
    )["google"]

    replays = [
        explain_inputs(DecisionInputs.from_json("google", t.inputs), SPEC, t.at)
        for t in result.ticks
    ]

    assert len(replays) == 289
    assert {t.action for t in result.ticks} >= {"promote", "rollback", "hold"}
    assert all(r.reproduces for r in replays)


def test_tune_suggests_a_max_above_the_noise_that_still_breaches_the_incident() -> None:
    frame = generated(days=7)
    suggestions = {s.name: s for s in suggest(SPEC, frame, 0.005, 600, 7 * 144 + 1)}

    error = suggestions["error_rate"]
    assert 0.006 < error.max < 0.05
    assert error.expected_false_rollback <= 0.005
    assert error.excluded >= 10  # the incident's windows were set aside
    assert error.detects.startswith("detects a ") and "at 1" in error.detects
    assert suggestions["latency_p95"].max >= 0.2
    assert suggestions["oauth_refresh_failures"].max >= 1


def test_the_suggested_config_is_a_complete_rollouts_file() -> None:
    frame = generated(days=7)
    suggestions = suggest(SPEC, frame, 0.005, 600, 7 * 144 + 1)

    loaded = parse_config(config_text(SPEC, suggestions)).feature("google")

    assert loaded.slos[0].max == suggestions[0].max
    assert loaded.slos[0].min_samples == suggestions[0].min_samples
    assert loaded.dwell == SPEC.dwell and loaded.ladder == SPEC.ladder


def test_tune_refuses_a_short_history_saying_how_much_more_it_needs() -> None:
    with pytest.raises(
        ConfigError, match=r"needs at least 600: widen the range by about 2\.2 days"
    ):
        suggest(SPEC, generated(days=2), 0.005, 600, 289)


def test_tune_refuses_thin_traffic_saying_what_to_do() -> None:
    frame = generated(days=7)
    frame.loc[frame["slo"] == "error_rate", "samples"] = 12.0

    with pytest.raises(ConfigError, match="typical window has 12 requests"):
        suggest(SPEC, frame, 0.005, 600, 7 * 144 + 1)


def test_the_tails_match_known_values() -> None:
    assert binomial_tail(10, 0.5, 8) == pytest.approx(56 / 1024)
    assert binomial_tail(100, 0.0, 1) == 0.0
    assert poisson_tail(2.0, 1) == pytest.approx(1 - math.exp(-2))


def test_explain_replays_a_segments_decision_through_its_own_unit() -> None:
    from rollout_core.config import expand_segments

    spec = parse_config(
        """
features:
  google:
    segments: {by: region, values: [canary, west]}
    slos:
      - {name: error_rate, ratio: {errors: sum by (region) (e), total: sum by (region) (t)},
         max: 0.01}
"""
    ).feature("google")
    canary, west = expand_segments([spec])
    states = {canary.name: FlagState(canary.name, 100.0), west.name: FlagState(west.name, 10.0)}
    snapshots = {
        unit.name: SloSnapshot(unit.name, {"error_rate": SloReading("error_rate", r, 900.0)}, AT)
        for unit, r in ((canary, 0.001), (west, 0.2))
    }
    proposals = evaluate_all([canary, west], snapshots, states)
    rollback = check_all_guards([canary, west], states, proposals, AT)[west.name]
    assert isinstance(rollback, Decision) and rollback.action == "rollback"

    inputs = DecisionInputs.from_json(west.name, rollback.inputs)
    explanation = explain_inputs(inputs, west, AT)

    assert explanation.reproduces and explanation.replayed["to_percent"] == 0


def test_the_backtest_records_an_absent_count_series_as_absent_as_the_live_flow_does() -> None:
    frame = generated(days=1)
    quiet = frame["slo"] == "oauth_refresh_failures"
    frame.loc[quiet, ["value", "samples"]] = math.nan
    frame["error"] = ""
    frame.loc[quiet, "error"] = "no series"  # the counter was never exported: read as 0
    start = AT - timedelta(days=1)

    result = backtest(
        [SPEC], ReplaySource(frame), start, AT, timedelta(minutes=10), record_inputs=True
    )["google"]

    rows = [json.loads(t.inputs)["s"] for t in result.ticks]
    oauth = [next(r for r in slos if r[0] == "oauth_refresh_failures") for slos in rows]
    assert {(r[2], r[3]) for r in oauth} == {(None, None)}  # recorded as read: absent
    assert any(t.action == "promote" for t in result.ticks)  # and read as 0, as live reads it
    assert all(
        explain_inputs(DecisionInputs.from_json("google", t.inputs), SPEC, t.at).reproduces
        for t in result.ticks
    )
