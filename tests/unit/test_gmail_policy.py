"""The original entry point keeps its documented results and its log wording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollout_core.config import load_config
from rollout_core.model import FlagState, SloReading, SloSnapshot
from rollout_core.policy import (
    WITHOUT_TRAFFIC,
    Recommendation,
    evaluate_slos,
    gmail_policy,
    gmail_spec,
    propose,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTHY: dict[str, Any] = {
    "error_rate_5m": 0.002,
    "latency_p95_5m": 0.2,
    "oauth_refresh_failures_15m": 0,
}


def test_original_example_errors_at_fifty_percent_roll_back_to_ten() -> None:
    result = gmail_policy({**HEALTHY, "error_rate_5m": 0.015}, 50)
    assert result.target_percent == 10
    assert "error_rate" in result.reason
    assert result.reason.startswith("Rollback 50% -> 10%")


def test_original_example_healthy_at_ten_percent_ramps_to_fifty() -> None:
    result = gmail_policy(HEALTHY, 10)
    assert result.target_percent == 50
    assert "ramp" in result.reason


def test_original_example_at_full_rollout_holds() -> None:
    result = gmail_policy(HEALTHY, 100)
    assert result.target_percent == 100
    assert result.reason.startswith("Hold")


@pytest.mark.parametrize(
    ("current", "target", "word"),
    [(0, 10, "Initial canary"), (10, 50, "ramp"), (25, 50, "ramp"), (50, 100, "full rollout")],
)
def test_step_wording_keeps_the_original_log_words(
    current: float, target: float, word: str
) -> None:
    result = gmail_policy(HEALTHY, current)
    assert (result.target_percent, word in result.reason) == (target, True)


@pytest.mark.parametrize(
    ("key", "value", "word"),
    [
        ("error_rate_5m", 0.05, "error_rate"),
        ("latency_p95_5m", 0.62, "latency"),
        ("oauth_refresh_failures_15m", 7, "OAuth"),
    ],
)
def test_breach_reasons_name_the_slo_as_the_original_did(key: str, value: float, word: str) -> None:
    result = gmail_policy({**HEALTHY, key: value}, 50)
    assert result.target_percent == 10
    assert word in result.reason


def test_thresholds_are_the_original_ones() -> None:
    assert gmail_policy({**HEALTHY, "latency_p95_5m": 0.5}, 10).target_percent == 50
    assert gmail_policy({**HEALTHY, "latency_p95_5m": 0.51}, 10).target_percent == 0
    assert gmail_policy({**HEALTHY, "oauth_refresh_failures_15m": 5}, 10).target_percent == 50
    assert gmail_policy({**HEALTHY, "oauth_refresh_failures_15m": 6}, 10).target_percent == 0


def test_with_request_counts_a_small_sample_holds_instead_of_rolling_back() -> None:
    point_estimate = gmail_policy({**HEALTHY, "error_rate_5m": 0.05}, 50)
    assert point_estimate.target_percent == 10
    evidence = gmail_policy({**HEALTHY, "error_rate_5m": 0.05, "requests_5m": 20}, 50)
    assert evidence.target_percent == 50
    assert "n=20 < min_samples 200" in evidence.reason


def test_with_request_counts_strong_evidence_rolls_back() -> None:
    result = gmail_policy({**HEALTHY, "error_rate_5m": 0.024, "requests_5m": 812}, 50)
    assert result.target_percent == 10
    assert "n=812, 99% lower bound" in result.reason


def test_with_request_counts_promotion_needs_min_samples() -> None:
    assert gmail_policy({**HEALTHY, "requests_5m": 150}, 10).target_percent == 10
    assert gmail_policy({**HEALTHY, "requests_5m": 200}, 10).target_percent == 50


def test_zero_traffic_holds() -> None:
    result = gmail_policy({**HEALTHY, "error_rate_5m": float("nan"), "requests_5m": 0}, 10)
    assert result == Recommendation(10, result.reason)
    assert "no traffic" in result.reason


def test_a_missing_error_rate_never_promotes() -> None:
    metrics = {k: v for k, v in HEALTHY.items() if k != "error_rate_5m"}
    result = gmail_policy(metrics, 10)
    assert result.target_percent == 10
    assert "error_rate no data" in result.reason


def test_a_missing_oauth_count_reads_as_zero() -> None:
    metrics = {k: v for k, v in HEALTHY.items() if k != "oauth_refresh_failures_15m"}
    assert gmail_policy(metrics, 10).target_percent == 50


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"'error_rate_5m'.*'lots'"):
        gmail_policy({**HEALTHY, "error_rate_5m": "lots"}, 10)
    with pytest.raises(ValueError, match="current_percent 150"):
        gmail_policy(HEALTHY, 150)


def test_gmail_policy_is_the_shared_policy_on_the_original_spec() -> None:
    metrics = {**HEALTHY, "error_rate_5m": 0.012, "requests_5m": 5000}
    spec = gmail_spec(has_request_counts=True)
    readings = {
        "error_rate": SloReading("error_rate", 0.012, 5000),
        "latency_p95": SloReading("latency_p95", 0.2),
        "oauth_refresh_failures": SloReading("oauth_refresh_failures", 0),
    }
    verdicts = evaluate_slos(spec, SloSnapshot("google", readings))
    decision = propose(spec, FlagState("google", 50), verdicts)
    assert gmail_policy(metrics, 50) == Recommendation(decision.to_percent, decision.reason)


def test_gmail_spec_matches_the_shipped_google_configuration() -> None:
    shipped = load_config(REPO_ROOT / "rollouts.yaml").feature("google")
    original = gmail_spec(has_request_counts=True)
    assert original.slos == shipped.slos
    assert (original.ladder, original.safe_percent) == (shipped.ladder, shipped.safe_percent)


def test_without_request_counts_every_promotion_says_it_had_no_traffic_evidence() -> None:
    assert gmail_spec(has_request_counts=False).promote_without_traffic is True
    assert gmail_spec(has_request_counts=True).promote_without_traffic is False
    result = gmail_policy(HEALTHY, 10)
    assert result.target_percent == 50
    assert WITHOUT_TRAFFIC in result.reason
    counted = gmail_policy({**HEALTHY, "requests_5m": 5000}, 10)
    assert counted.target_percent == 50 and WITHOUT_TRAFFIC not in counted.reason


@pytest.mark.parametrize("key", ["error_rate_5m", "latency_p95_5m", "oauth_refresh_failures_15m"])
def test_a_nan_metric_is_no_data_and_never_promotes(key: str) -> None:
    result = gmail_policy({**HEALTHY, key: float("nan"), "requests_5m": 5000}, 10)
    assert result.target_percent == 10
    assert "no data (NaN)" in result.reason
