"""The SLO policy: each verdict with its numbers, then the policy's proposal.

Argo style: assert a result, change one limit, assert again.
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import replace
from typing import Any

import pytest

from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.model import (
    Action,
    Deferred,
    FlagState,
    QueryError,
    SloReading,
    SloSnapshot,
    SloVerdict,
    Verdict,
)
from rollout_core.policy import (
    evaluate_slo,
    evaluate_slos,
    format_ratio,
    next_step,
    propose,
    safe_step,
    slo_title,
)
from rollout_core.stats import wilson_lower_bound


def ratio_slo(**overrides: Any) -> SloSpec:
    fields = {"name": "error_rate", "ratio": {"errors": "sum(e)", "total": "sum(t)"}, "max": 0.01}
    return SloSpec.model_validate({**fields, "min_samples": 200, **overrides})


def value_slo(**overrides: Any) -> SloSpec:
    return SloSpec.model_validate({"name": "latency_p95", "query": "p95", "max": 0.5, **overrides})


def count_slo(**overrides: Any) -> SloSpec:
    fields = {"name": "oauth_refresh_failures", "kind": "count", "query": "sum(f)", "max": 5}
    return SloSpec.model_validate({**fields, **overrides})


def feature(**overrides: Any) -> FeatureSpec:
    slos = [ratio_slo().model_dump(), value_slo().model_dump(), count_slo().model_dump()]
    return FeatureSpec.model_validate({"name": "google", "slos": slos, **overrides})


def verdict(name: str, outcome: Verdict, samples: float | None = 1000) -> SloVerdict:
    return SloVerdict(name, outcome, 0.0, 1.0, samples, message=f"{name} made up: {outcome}")


def test_ratio_breach_message_carries_value_samples_bound_and_limit() -> None:
    result = evaluate_slo(ratio_slo(), SloReading("error_rate", 0.024, 812))
    assert result.verdict is Verdict.BREACH
    assert result.message == "error_rate 2.4% (n=812, 99% lower bound 1.4%) > max 1.0%: breach"
    assert result.bound == pytest.approx(wilson_lower_bound(0.024, 812))
    assert (result.value, result.samples, result.limit) == (0.024, 812, 0.01)


def test_ratio_breach_needs_the_lower_bound_above_max_not_just_the_point_estimate() -> None:
    reading = SloReading("error_rate", 0.024, 812)
    assert evaluate_slo(ratio_slo(max=0.01), reading).verdict is Verdict.BREACH
    raised = evaluate_slo(ratio_slo(max=0.02), reading)
    assert raised.verdict is Verdict.INCONCLUSIVE
    assert "but the lower bound is not" in raised.message
    assert evaluate_slo(ratio_slo(max=0.03), reading).verdict is Verdict.HEALTHY


def test_strong_evidence_breaches_below_min_samples() -> None:
    reading = SloReading("error_rate", 0.5, 20)
    assert evaluate_slo(ratio_slo(), reading).verdict is Verdict.BREACH
    assert evaluate_slo(ratio_slo(max=0.4), reading).verdict is Verdict.INCONCLUSIVE


def test_one_error_in_twenty_requests_is_inconclusive_not_a_breach() -> None:
    result = evaluate_slo(ratio_slo(), SloReading("error_rate", 0.05, 20))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "n=20 < min_samples 200" in result.message


def test_ratio_is_healthy_only_with_min_samples() -> None:
    reading = SloReading("error_rate", 0.004, 3000)
    healthy = evaluate_slo(ratio_slo(), reading)
    assert healthy.verdict is Verdict.HEALTHY
    assert healthy.message == "error_rate 0.4% (n=3000, 99% lower bound 0.2%) <= max 1.0%: healthy"
    starved = evaluate_slo(ratio_slo(min_samples=5000), reading)
    assert starved.verdict is Verdict.INCONCLUSIVE
    assert starved.message == "error_rate 0.4% (n=3000 < min_samples 5000): inconclusive"


@pytest.mark.parametrize(
    ("value", "said"),
    [(None, "no data"), (math.nan, "no data (NaN)"), (math.inf, "no data (+Inf)")],
)
def test_ratio_without_data_is_inconclusive_and_says_no_data(
    value: float | None, said: str
) -> None:
    result = evaluate_slo(ratio_slo(), SloReading("error_rate", value, 500))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.message == f"error_rate {said}: inconclusive"


def test_ratio_at_zero_traffic_is_inconclusive() -> None:
    result = evaluate_slo(ratio_slo(min_samples=0), SloReading("error_rate", math.nan, 0))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.message == "error_rate no traffic (n=0): inconclusive"


def test_ratio_without_a_request_count_is_inconclusive_while_min_samples_is_set() -> None:
    reading = SloReading("error_rate", 0.5, None)
    assert evaluate_slo(ratio_slo(), reading).verdict is Verdict.INCONCLUSIVE
    assert "no request count" in evaluate_slo(ratio_slo(), reading).message
    assert evaluate_slo(ratio_slo(min_samples=0), reading).verdict is Verdict.BREACH


def test_ratio_with_a_nan_request_count_is_never_healthy() -> None:
    reading = SloReading("error_rate", 0.0, math.nan)
    assert evaluate_slo(ratio_slo(), reading).verdict is Verdict.INCONCLUSIVE


def test_value_slo_breaches_above_max_until_max_is_raised() -> None:
    reading = SloReading("latency_p95", 0.62)
    breach = evaluate_slo(value_slo(), reading)
    assert breach.verdict is Verdict.BREACH
    assert breach.message == "latency_p95 0.62s > max 0.5s: breach"
    healthy = evaluate_slo(value_slo(max=0.7), reading)
    assert healthy.message == "latency_p95 0.62s <= max 0.7s: healthy"


def test_value_equal_to_max_is_healthy() -> None:
    assert evaluate_slo(value_slo(), SloReading("latency_p95", 0.5)).verdict is Verdict.HEALTHY


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (None, "no data"),
        (math.nan, "no data (NaN)"),
        (math.inf, "no data (+Inf)"),
        (-math.inf, "no data (-Inf)"),
    ],
)
def test_value_slo_without_data_is_inconclusive(value: float | None, said: str) -> None:
    result = evaluate_slo(value_slo(), SloReading("latency_p95", value))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.message == f"latency_p95 {said}: inconclusive"


def test_value_slo_respects_min_samples_in_both_directions() -> None:
    guarded = value_slo(min_samples=100, samples="sum(t)")
    slow_but_thin = evaluate_slo(guarded, SloReading("latency_p95", 0.9, 40))
    assert slow_but_thin.verdict is Verdict.INCONCLUSIVE
    assert slow_but_thin.message == "latency_p95 0.9s (n=40 < min_samples 100): inconclusive"
    assert (
        evaluate_slo(guarded, SloReading("latency_p95", 0.2, None)).verdict is Verdict.INCONCLUSIVE
    )
    relaxed = value_slo(min_samples=20, samples="sum(t)")
    result = evaluate_slo(relaxed, SloReading("latency_p95", 0.9, 40))
    assert result.message == "latency_p95 0.9s (n=40) > max 0.5s: breach"


def test_count_slo_breaches_above_max_until_max_is_raised() -> None:
    reading = SloReading("oauth_refresh_failures", 7)
    breach = evaluate_slo(count_slo(), reading)
    assert breach.message == "oauth_refresh_failures 7 > max 5: breach"
    assert evaluate_slo(count_slo(max=7), reading).verdict is Verdict.HEALTHY


def test_absent_count_series_reads_as_zero_unless_configured_otherwise() -> None:
    absent = SloReading("oauth_refresh_failures", None)
    healthy = evaluate_slo(count_slo(), absent)
    assert healthy.verdict is Verdict.HEALTHY
    assert healthy.message == "oauth_refresh_failures 0 (no series, read as 0) <= max 5: healthy"
    strict = evaluate_slo(count_slo(absent_is_zero=False), absent)
    assert strict.message == "oauth_refresh_failures no data: inconclusive"


def test_nan_count_is_inconclusive_even_when_absent_reads_as_zero() -> None:
    result = evaluate_slo(count_slo(), SloReading("oauth_refresh_failures", math.nan))
    assert result.verdict is Verdict.INCONCLUSIVE


def test_count_above_max_breaches_even_below_min_samples() -> None:
    spec = count_slo(min_samples=100, samples="sum(t)")
    assert evaluate_slo(spec, SloReading("oauth_refresh_failures", 7, 10)).verdict is Verdict.BREACH
    quiet = evaluate_slo(spec, SloReading("oauth_refresh_failures", 1, 10))
    assert quiet.verdict is Verdict.INCONCLUSIVE


def test_evaluate_slos_keeps_configuration_order_and_treats_absent_readings_as_missing() -> None:
    snapshot = SloSnapshot("google", {"latency_p95": SloReading("latency_p95", 0.1)})
    verdicts = evaluate_slos(feature(), snapshot)
    assert [v.name for v in verdicts] == ["error_rate", "latency_p95", "oauth_refresh_failures"]
    assert [v.verdict for v in verdicts] == [Verdict.INCONCLUSIVE, Verdict.HEALTHY, Verdict.HEALTHY]


def test_next_step_is_strictly_above_the_current_percent() -> None:
    spec = feature()
    assert [next_step(spec, p) for p in (0, 5, 10, 25, 50, 99.5, 100)] == [
        10,
        10,
        50,
        50,
        100,
        100,
        None,
    ]
    assert next_step(feature(ladder=[0, 1, 5, 25, 100]), 1) == 5


def test_safe_step_is_safe_percent_when_above_it_else_zero() -> None:
    assert [safe_step(feature(), p) for p in (100, 50, 10.5, 10, 5)] == [10, 10, 10, 0, 0]
    assert safe_step(feature(safe_percent=25), 50) == 25


@pytest.mark.parametrize(
    ("current", "target"), [(50.0, 10.0), (100.0, 10.0), (10.0, 0.0), (5.0, 0.0)]
)
def test_any_breach_rolls_back_to_the_safe_step(current: float, target: float) -> None:
    verdicts = [verdict("error_rate", Verdict.BREACH), verdict("latency_p95", Verdict.HEALTHY)]
    decision = propose(feature(), FlagState("google", current), verdicts)
    assert (decision.action, decision.to_percent) == (Action.ROLLBACK, target)
    assert decision.proposed is Action.ROLLBACK
    assert decision.reasons[0].startswith("Rollback")
    assert "error rate" in decision.reasons[0]
    assert decision.reasons[1:] == ("error_rate made up: breach",)


def test_breach_at_zero_holds_with_the_breach_reason() -> None:
    decision = propose(feature(), FlagState("google", 0), [verdict("error_rate", Verdict.BREACH)])
    assert (decision.action, decision.to_percent) == (Action.HOLD, 0)
    assert decision.reason == "Hold at 0%: error rate breach, nothing to roll back; " + (
        "error_rate made up: breach"
    )


def test_breach_wins_over_inconclusive() -> None:
    verdicts = [verdict("a", Verdict.INCONCLUSIVE), verdict("oauth_failures", Verdict.BREACH)]
    decision = propose(feature(), FlagState("google", 50), verdicts)
    assert decision.action is Action.ROLLBACK
    assert "OAuth failures" in decision.reasons[0]


@pytest.mark.parametrize(
    ("current", "target", "wording"),
    [
        (0.0, 10.0, "Initial canary 0% -> 10%: all SLOs healthy"),
        (10.0, 50.0, "SLOs healthy, ramp 10% -> 50%"),
        (25.0, 50.0, "SLOs healthy, ramp 25% -> 50%"),
        (50.0, 100.0, "SLOs healthy, full rollout 50% -> 100%"),
    ],
)
def test_all_healthy_promotes_to_the_next_ladder_step(
    current: float, target: float, wording: str
) -> None:
    verdicts = [verdict("error_rate", Verdict.HEALTHY), verdict("latency_p95", Verdict.HEALTHY)]
    decision = propose(feature(), FlagState("google", current), verdicts)
    assert (decision.action, decision.to_percent, decision.reasons[0]) == (
        Action.PROMOTE,
        target,
        wording,
    )
    assert decision.proposed_percent == target


def test_a_different_ladder_changes_the_promotion_target() -> None:
    healthy = [verdict("error_rate", Verdict.HEALTHY)]
    assert propose(feature(), FlagState("google", 10), healthy).to_percent == 50
    spec = feature(ladder=[0, 10, 25, 100])
    assert propose(spec, FlagState("google", 10), healthy).to_percent == 25


def test_at_full_rollout_healthy_holds() -> None:
    decision = propose(feature(), FlagState("google", 100), [verdict("x", Verdict.HEALTHY)])
    assert (decision.action, decision.to_percent) == (Action.HOLD, 100)
    assert decision.reasons[0] == "Hold at 100%: full rollout reached"


def test_inconclusive_holds_and_names_each_inconclusive_slo() -> None:
    verdicts = [
        verdict("error_rate", Verdict.INCONCLUSIVE),
        verdict("latency_p95", Verdict.HEALTHY),
        verdict("oauth_refresh_failures", Verdict.INCONCLUSIVE),
    ]
    decision = propose(feature(), FlagState("google", 10), verdicts)
    assert decision.action is Action.HOLD
    assert decision.reasons == (
        "Hold at 10%: inconclusive error_rate, oauth_refresh_failures",
        "error_rate made up: inconclusive",
        "oauth_refresh_failures made up: inconclusive",
    )


def test_no_verdicts_at_all_hold() -> None:
    decision = propose(feature(), FlagState("google", 10), [])
    assert decision.action is Action.HOLD
    assert decision.reason == "Hold at 10%: inconclusive no SLO verdicts"


def test_wilson_lower_bound_matches_known_values_and_tightens_with_samples() -> None:
    assert wilson_lower_bound(0.04, 100) == pytest.approx(0.013329, abs=1e-5)
    assert wilson_lower_bound(0.03, 100) == pytest.approx(0.008572, abs=1e-5)
    assert wilson_lower_bound(0.0, 100) == 0.0
    assert wilson_lower_bound(0.04, 100) < wilson_lower_bound(0.04, 10_000) < 0.04
    with pytest.raises(ValueError, match="samples 0"):
        wilson_lower_bound(0.1, 0)


def test_ratios_render_as_percents_with_one_decimal() -> None:
    rendered = [format_ratio(r) for r in (0.024, 0.01, 0.0, 0.0004, 0.5)]
    assert rendered == ["2.4%", "1.0%", "0.0%", "0.04%", "50.0%"]


def test_slo_titles_spell_known_acronyms() -> None:
    assert slo_title("oauth_refresh_failures") == "OAuth refresh failures"
    assert slo_title("error_rate") == "error rate"


def test_healthy_slos_without_traffic_evidence_hold_instead_of_promoting() -> None:
    thin = [
        verdict("error_rate", Verdict.HEALTHY, samples=150),
        verdict("latency_p95", Verdict.HEALTHY),
    ]
    decision = propose(feature(), FlagState("google", 10), thin)
    assert (decision.action, decision.to_percent) == (Action.HOLD, 10)
    assert decision.reasons[0] == (
        "Hold at 10%: SLOs healthy but no SLO with min_samples > 0 saw enough traffic to promote"
    )
    enough = [
        verdict("error_rate", Verdict.HEALTHY, samples=200),
        verdict("latency_p95", Verdict.HEALTHY),
    ]
    assert propose(feature(), FlagState("google", 10), enough).action is Action.PROMOTE


def test_an_opted_in_feature_promotes_without_traffic_and_says_so() -> None:
    spec = FeatureSpec.model_validate(
        {"name": "google", "slos": [value_slo().model_dump()], "promote_without_traffic": True}
    )
    decision = propose(
        spec, FlagState("google", 10), [verdict("latency_p95", Verdict.HEALTHY, None)]
    )
    assert decision.action is Action.PROMOTE
    assert decision.reasons[:2] == (
        "SLOs healthy, ramp 10% -> 50%",
        "promoted without traffic evidence (promote_without_traffic)",
    )


def test_a_query_error_is_inconclusive_and_names_the_error() -> None:
    error = QueryError("latency_p95", "p95", "execution", "too many samples", True, 422)
    result = evaluate_slo(value_slo(), SloReading("latency_p95", 0.2, None, error))
    assert result.verdict is Verdict.INCONCLUSIVE and result.error is error
    assert result.message == (
        "latency_p95 transient query error: HTTP 422 execution: too many samples (query 'p95'): "
        "inconclusive"
    )


def test_a_breach_rolls_back_whatever_error_the_other_slos_have() -> None:
    broken = QueryError("latency_p95", "p95", "bad_data", "parse error", False, 400)
    verdicts = evaluate_slos(
        feature(),
        SloSnapshot(
            "google",
            {
                "error_rate": SloReading("error_rate", 0.2, 2000),
                "latency_p95": SloReading("latency_p95", None, None, broken),
            },
        ),
    )
    decision = propose(feature(), FlagState("google", 100), verdicts)
    assert (decision.action, decision.to_percent) == (Action.ROLLBACK, 10)
    assert decision.configuration_problems == (
        "SLO 'latency_p95': HTTP 400 bad_data: parse error (query 'p95'); "
        "fix the query in the configuration",
    )


@pytest.mark.parametrize(
    ("slo", "reading"),
    [
        (ratio_slo(), SloReading("error_rate", -0.05, 2000)),
        (ratio_slo(min_samples=0), SloReading("error_rate", -0.05, None)),
        (count_slo(), SloReading("oauth_refresh_failures", -3.0, None)),
    ],
)
def test_a_negative_ratio_or_count_is_no_data_never_healthy(
    slo: SloSpec, reading: SloReading
) -> None:
    result = evaluate_slo(slo, reading)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "is negative" in result.message


def test_a_decisions_words_are_made_on_first_read_once_and_pickle_as_plain_text() -> None:
    spec = feature()
    readings = {"error_rate": SloReading("error_rate", 0.024, 812)}
    state = FlagState("google", percent=50.0)
    decision = propose(spec, state, evaluate_slos(spec, SloSnapshot("google", readings)))
    made: list[int] = []

    def text() -> str:
        made.append(1)
        return "text"

    later = Deferred(text)

    shipped = pickle.dumps(decision)
    copied = pickle.loads(shipped)

    assert b"Deferred" not in shipped  # a worker or Prefect receives the words, not a recipe
    assert copied == decision == copy.deepcopy(decision)
    assert decision.reasons == (
        "Rollback 50% -> 10% on error rate breach",
        "error_rate 2.4% (n=812, 99% lower bound 1.4%) > max 1.0%: breach",
    )
    assert decision.reasons is decision.reasons and copied.reason == decision.reason
    assert replace(decision, to_percent=0.0).reasons == decision.reasons
    unread = len(made)
    assert (unread, later.get(), later.get(), len(made)) == (0, "text", "text", 1)
