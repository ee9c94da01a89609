"""Sticky bucketing: golden vectors (no silent reshuffle) and its statistical properties."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rollout_core.config import FEATURE_NAME_PATTERN
from rollout_sdk.bucketing import (
    BUCKETS,
    bucket,
    bucketing_unit,
    is_in_rollout,
    percent_threshold,
)

GOLDEN = Path(__file__).with_name("golden_buckets.csv")
CHI_SQUARE_99_DOF_P_0_001 = 148.23  # scipy.stats.chi2.ppf(0.999, 99)
UNITS = [f"actor-{number}" for number in range(200_000)]

_NAME_START = "abcdefghijklmnopqrstuvwxyz0123456789"
features = st.builds(
    str.__add__, st.sampled_from(_NAME_START), st.text(_NAME_START + "_.-", max_size=30)
)
percents = st.integers(min_value=0, max_value=10_000).map(lambda hundredths: hundredths / 100)


def read_golden_rows() -> list[tuple[str, str, int]]:
    with GOLDEN.open(encoding="utf-8", newline="") as file:
        return [(row["feature"], row["unit"], int(row["bucket"])) for row in csv.DictReader(file)]


def test_golden_vectors_still_give_the_committed_buckets() -> None:
    rows = read_golden_rows()
    assert len(rows) >= 20
    changed = [(f, u, want, bucket(f, u)) for f, u, want in rows if bucket(f, u) != want]
    assert changed == [], "bucketing changed: this would reshuffle which users see features"


def test_bucket_is_sha256_of_feature_colon_unit_first_8_bytes_mod_10000() -> None:
    unit = "ws-1:Zoë"
    digest = hashlib.sha256(f"google:{unit}".encode()).digest()
    assert bucket("google", unit) == int.from_bytes(digest[:8], "big") % 10_000


def test_unit_includes_the_workspace_only_when_one_is_given() -> None:
    assert bucketing_unit("user-9", "ws-1") == "ws-1:user-9"
    assert bucketing_unit("user-9") == "user-9"
    assert bucketing_unit("user-9", "") == "user-9"
    assert bucketing_unit(42, 7) == "7:42"


@pytest.mark.parametrize(
    ("percent", "buckets_in"),
    [
        (0, 0),
        (0.01, 1),
        (0.5, 50),
        (1.1, 110),
        (0.57, 57),
        (33.33, 3333),
        (99.99, 9999),
        (100, 10_000),
    ],
)
def test_a_percent_lets_in_exactly_its_hundredths_of_buckets(
    percent: float, buckets_in: int
) -> None:
    assert sum(is_in_rollout(position, percent) for position in range(BUCKETS)) == buckets_in


@given(percents)
def test_the_last_bucket_in_sits_just_below_the_percent_in_hundredths(percent: float) -> None:
    hundredths = round(percent * 100)
    assert percent_threshold(percent) == hundredths
    assert not is_in_rollout(hundredths, percent)
    if hundredths > 0:
        assert is_in_rollout(hundredths - 1, percent)


@pytest.mark.parametrize("percent", [-0.01, 100.01, float("nan"), float("inf"), True])
def test_a_percent_outside_0_to_100_is_refused_by_name(percent: float) -> None:
    with pytest.raises(ValueError, match=r"expected a number in 0\.\.100"):
        is_in_rollout(0, percent)


@given(features, st.text(max_size=40), percents, percents)
def test_everyone_in_at_a_percent_stays_in_at_every_higher_percent(
    feature: str, unit: str, low: float, high: float
) -> None:
    assert FEATURE_NAME_PATTERN.fullmatch(feature)
    low, high = min(low, high), max(low, high)
    position = bucket(feature, unit)
    assert 0 <= position < BUCKETS
    if is_in_rollout(position, low):
        assert is_in_rollout(position, high)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(features)
def test_buckets_are_uniform_over_100_slices_by_chi_square(feature: str) -> None:
    counts = [0] * 100
    for unit in UNITS:
        counts[bucket(feature, unit) // 100] += 1
    expected = len(UNITS) / 100
    chi_square = sum((count - expected) ** 2 / expected for count in counts)
    assert chi_square < CHI_SQUARE_99_DOF_P_0_001, f"{feature}: chi-square {chi_square:.1f}"


@settings(max_examples=2, deadline=None, derandomize=True)
@given(features, features)
def test_two_features_ten_percent_cohorts_overlap_like_independent_draws(
    first: str, second: str
) -> None:
    assume(first != second)  # the same salt is the same cohort by design
    units = UNITS[:100_000]  # expected overlap 1000 units, sd 31: the band is +-9 sd
    first_in = {unit for unit in units if is_in_rollout(bucket(first, unit), 10)}
    second_in = {unit for unit in units if is_in_rollout(bucket(second, unit), 10)}
    overlap = len(first_in & second_in) / len(units)
    assert 0.007 <= overlap <= 0.013, f"{first} and {second} share {overlap:.3%} of units"
