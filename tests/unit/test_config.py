"""rollouts.yaml: the shipped file loads, and every bad field is named with file:line,
feature and field."""

from __future__ import annotations

import json
import subprocess
from datetime import time, timedelta
from pathlib import Path

import pytest

from deployments.servers import require_binary
from rollout_core.config import (
    RolloutsConfig,
    load_config,
    parse_config,
    parse_duration,
    validate_feature_name,
)
from rollout_core.errors import ConfigError, InvalidFeatureName

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = """\
defaults:
  ladder: [0, 10, 50, 100]
  safe_percent: 10
  dwell: 15m
  cooldown: 1h
features:
  google:
    slos:
      - name: error_rate
        ratio: {errors: sum(errors), total: sum(total)}
        max: 0.01
        min_samples: 200
      - name: latency_p95
        query: histogram_quantile(0.95, latency)
        max: 0.5
"""


def edited(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the base YAML"
    return text.replace(old, new)


def with_feature_field(line: str) -> str:
    return edited("  google:\n", f"  google:\n    {line}\n")


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def load_error(tmp_path: Path, text: str) -> tuple[str, Path]:
    path = tmp_path / "rollouts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    return str(raised.value), path


def load(tmp_path: Path, text: str) -> RolloutsConfig:
    path = tmp_path / "rollouts.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_the_shipped_rollouts_file_loads_with_the_original_google_slos() -> None:
    config = load_config(REPO_ROOT / "rollouts.yaml")
    google = config.feature("google")
    assert (google.ladder, google.safe_percent) == ((0, 10, 50, 100), 10)
    assert (google.dwell, google.cooldown) == (timedelta(minutes=15), timedelta(hours=1))
    slos = {slo.name: slo for slo in google.slos}
    assert (slos["error_rate"].kind, slos["error_rate"].max) == ("ratio", 0.01)
    assert slos["error_rate"].min_samples == 200
    assert (slos["latency_p95"].kind, slos["latency_p95"].max) == ("value", 0.5)
    assert (slos["oauth_refresh_failures"].kind, slos["oauth_refresh_failures"].max) == ("count", 5)
    assert slos["oauth_refresh_failures"].absent_is_zero is True
    ratio = slos["error_rate"].ratio
    assert ratio is not None
    assert ratio.errors.startswith("sum(increase(action_error_total{")
    assert 'provider="google",action="gmail.send"' in ratio.total


def test_the_base_file_of_these_tests_is_valid(tmp_path: Path) -> None:
    assert load(tmp_path, BASE).feature("google").slos[1].name == "latency_p95"


@pytest.mark.parametrize(
    ("text", "needle", "field"),
    [
        (edited("dwell: 15m", "dwell: 15 minutes"), "dwell: 15 minutes", "dwell"),
        (with_feature_field("dwell: 5x"), "dwell: 5x", "dwell"),
        (edited("cooldown: 1h", "cooldown: -5"), "cooldown: -5", "cooldown"),
        (edited("cooldown: 1h", "cooldown: yes"), "cooldown: yes", "cooldown"),
        (edited("[0, 10, 50, 100]", "[0, 50, 10, 100]"), "ladder:", "ladder"),
        (edited("[0, 10, 50, 100]", "[10, 50, 100]"), "ladder:", "ladder"),
        (edited("[0, 10, 50, 100]", "[0, 10, 50, 150]"), "ladder:", "ladder"),
        (edited("[0, 10, 50, 100]", "[0, .nan, 100]"), "ladder:", "ladder"),
        (with_feature_field("ladder: [0, 10, 10, 100]"), "ladder: [0, 10, 10", "ladder"),
        (edited("safe_percent: 10", "safe_percent: 100"), "safe_percent", "safe_percent"),
        (edited("safe_percent: 10", "safe_percent: -1"), "safe_percent", "safe_percent"),
        (edited("safe_percent: 10", "safe_percent: ten"), "safe_percent", "safe_percent"),
        (with_feature_field("colour: red"), "colour: red", "colour"),
        (edited("max: 0.5", "max: 0.5\n        colour: red"), "colour: red", "slos.1.colour"),
        (edited("max: 0.01", "max: 1.5"), "name: error_rate", "slos.0"),
        (edited("max: 0.5", "max: -1"), "max: -1", "slos.1.max"),
        (edited("max: 0.5", "max: .inf"), "max: .inf", "slos.1.max"),
        (edited("        query: histogram_quantile(0.95, latency)\n", ""), "p95", "slos.1"),
        (edited("sum(errors)", "''"), "ratio:", "slos.0.ratio.errors"),
        (edited("name: latency_p95", "name: error_rate", BASE), "slos:", "slos"),
        (edited("name: latency_p95", "name: latency-p95"), "latency-p95", "slos.1.name"),
        (edited("min_samples: 200", "min_samples: -3"), "min_samples: -3", "slos.0.min_samples"),
        (
            edited("max: 0.5", "max: 0.5\n        min_samples: 100"),
            "name: latency_p95",
            "slos.1",
        ),
        (
            with_feature_field("freeze: [{days: [fri], tz: Mars/Olympus}]"),
            "freeze:",
            "freeze.0.tz",
        ),
        (with_feature_field("freeze: [{days: [friyay]}]"), "freeze:", "freeze.0.days.0"),
        (with_feature_field("freeze: [{days: []}]"), "freeze:", "freeze.0.days"),
        (with_feature_field("freeze: [{start: '25:00'}]"), "freeze:", "freeze.0.start"),
        (with_feature_field("freeze: [{start: '24:00'}]"), "freeze:", "freeze.0.start"),
        (with_feature_field("freeze: [{start: '08:00', end: '08:00'}]"), "freeze:", "freeze.0"),
        (with_feature_field("freeze: [{colour: red}]"), "freeze:", "freeze.0.colour"),
        (edited("dwell: 15m", "dwell: .inf"), "dwell: .inf", "dwell"),
        (edited("dwell: 15m", "dwell: .nan"), "dwell: .nan", "dwell"),
        (edited("dwell: 15m", "dwell: 1e400"), "dwell: 1e400", "dwell"),
        (edited("cooldown: 1h", "cooldown: 99999999999d"), "cooldown: 9999", "cooldown"),
        (with_feature_field("cooldown: 3651d"), "cooldown: 3651d", "cooldown"),
        (edited("[0, 10, 50, 100]", "[0, true, 100]"), "ladder:", "ladder.1"),
        (edited("safe_percent: 10", "safe_percent: false"), "safe_percent", "safe_percent"),
        (edited("max: 0.5", "max: true"), "max: true", "slos.1.max"),
        (
            edited("min_samples: 200", "min_samples: true"),
            "min_samples: true",
            "slos.0.min_samples",
        ),
        (edited("    slos:\n", "    slos: 5\n").split("      - name")[0], "slos: 5", "slos"),
    ],
)
def test_a_bad_field_names_the_file_line_feature_and_field(
    tmp_path: Path, text: str, needle: str, field: str
) -> None:
    message, path = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, needle)}: feature 'google' field {field}:" in message


def test_a_count_slo_with_min_samples_needs_a_samples_query(tmp_path: Path) -> None:
    count = "      - {name: failures, kind: count, query: sum(f), max: 5, min_samples: 10}\n"
    message, _ = load_error(tmp_path, BASE + count)
    assert "field slos.2: SLO 'failures': min_samples needs a 'samples' query" in message
    with_samples = count.replace("min_samples: 10", "min_samples: 10, samples: sum(t)")
    assert load(tmp_path, BASE + with_samples).feature("google").slos[2].min_samples == 10


def test_an_slo_error_does_not_also_claim_the_slo_list_is_empty(tmp_path: Path) -> None:
    message, _ = load_error(tmp_path, edited("max: 0.5", "max: -1"))
    assert "at least 1 item" not in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("name", ["Goo gle", "a:b*", "google\nflags", "-google", "a" * 65])
def test_a_bad_feature_name_is_named_with_its_line(tmp_path: Path, name: str) -> None:
    text = edited("  google:", f"  {name!r}:".replace("'", '"'))
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:{line_of(text, name.splitlines()[0][:8])}: feature name")
    assert "expected ^[a-z0-9][a-z0-9_.-]{0,63}$" in message


def test_a_numeric_feature_name_must_be_quoted(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, edited("  google:", "  123:"))
    assert message == f"{path}:7: feature name 123 is not a string; quote it"
    assert "123" in load(tmp_path, edited("  google:", "  '123':")).features


def test_a_feature_listed_twice_is_an_error_not_silently_the_last_one(tmp_path: Path) -> None:
    text = BASE + "  google:\n    slos: [{name: x, query: q, max: 1}]\n"
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:16: duplicate key 'google'")


def test_a_feature_whose_environment_names_are_another_features_is_refused(
    tmp_path: Path,
) -> None:
    body = "\n    promote_without_traffic: true\n    slos: [{name: x, query: q, max: 1}]\n"
    text = BASE + "  google.send:" + body + "  google-send:" + body
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:{line_of(text, 'google-send')}: feature 'google-send'")
    assert "PROVIDER_GOOGLE_SEND_ENABLED" in message and "'google.send'" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour: 1\n" + BASE, ":1: unknown key 'colour' at the top level"),
        (
            edited("  dwell: 15m", "  dwel: 15m"),
            ":4: unknown key 'dwel' under 'defaults'; did you mean 'dwell'?",
        ),
        ("features: [\n", ":2: not valid YAML"),
        ("", ": expected a mapping with a 'features:' mapping"),
        ("features:\n  google: 5\n", ":2: feature 'google' must be a mapping"),
        ("features:\n  google: {}\n", ":2: feature 'google' field slos: Field required"),
    ],
)
def test_structural_errors_point_at_the_file(tmp_path: Path, text: str, expected: str) -> None:
    message, path = load_error(tmp_path, text)
    assert f"{path}{expected}" in message


PROFILES = """\
profiles:
  cautious:
    ladder: [0, 1, 5, 25, 100]
    dwell: 1h
"""


def test_a_profile_supplies_defaults_and_the_feature_overrides_it(tmp_path: Path) -> None:
    text = PROFILES + with_feature_field("profile: cautious\n    dwell: 30m")
    google = load(tmp_path, text).feature("google")
    assert google.ladder == (0, 1, 5, 25, 100)
    assert google.dwell == timedelta(minutes=30)
    assert google.cooldown == timedelta(hours=1)


def test_a_bad_profile_field_points_at_the_profile(tmp_path: Path) -> None:
    text = edited("dwell: 1h", "dwell: soon", PROFILES) + with_feature_field("profile: cautious")
    message, path = load_error(tmp_path, text)
    assert f"{path}:4: feature 'google' field dwell: duration 'soon' is invalid" in message


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    text = PROFILES + with_feature_field("profile: reckless")
    message, path = load_error(tmp_path, text)
    expected = f"{path}:{line_of(text, 'profile: reckless')}: feature 'google' uses profile"
    assert message.startswith(expected)
    assert "(known: cautious)" in message


def test_a_profile_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    text = "profiles:\n  cautious: 5\n" + with_feature_field("profile: cautious")
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:2: profile 'cautious' must be a mapping")


def test_profiles_must_be_a_mapping(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, "profiles: [1]\n" + BASE)
    assert message.startswith(f"{path}:1: 'profiles' is [1]; expected a mapping")


def test_empty_defaults_as_a_list_are_refused_not_read_as_no_defaults(tmp_path: Path) -> None:
    text = "defaults: []\nfeatures:" + BASE.split("features:")[1]
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:1: 'defaults' is []; expected a mapping")
    assert "remove 'defaults:'" in message


def test_huge_durations_are_a_config_error_not_an_overflow_traceback(tmp_path: Path) -> None:
    text = edited("cooldown: 1h", "cooldown: 99999999999d")
    message, path = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'cooldown:')}: feature 'google' field cooldown:" in message
    assert "too long; expected at most 3650d" in message and "99999999999d" in message
    message, _ = load_error(tmp_path, edited("dwell: 15m", "dwell: .inf"))
    assert "is not a finite number" in message


def test_a_boolean_ladder_step_is_refused_rather_than_read_as_one(tmp_path: Path) -> None:
    message, _ = load_error(tmp_path, edited("[0, 10, 50, 100]", "[0, true, 100]"))
    assert "field ladder.1: true is a boolean, not a number" in message


@pytest.mark.parametrize(("typo", "meant"), [("featurs", "features"), ("defualts", "defaults")])
def test_a_top_level_typo_is_named_with_its_line_and_the_closest_key(
    tmp_path: Path, typo: str, meant: str
) -> None:
    text = BASE.replace(f"{meant}:", f"{typo}:")
    message, path = load_error(tmp_path, text)
    assert message == (
        f"{path}:{line_of(text, typo)}: unknown key {typo!r} at the top level; "
        f"did you mean {meant!r}?"
    )


def test_a_name_key_inside_a_feature_is_refused_not_silently_overridden(tmp_path: Path) -> None:
    text = with_feature_field("name: outlook")
    message, path = load_error(tmp_path, text)
    assert message.startswith(
        f"{path}:{line_of(text, 'name: outlook')}: feature 'google' has a 'name:' key ('outlook')"
    )
    assert "remove 'name:'" in message


LATENCY_ONLY = """\
features:
  google:
    slos:
      - name: latency_p95
        query: histogram_quantile(0.95, latency)
        max: 0.5
"""


def test_a_feature_without_an_slo_that_counts_traffic_is_refused_at_load(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, LATENCY_ONLY)
    assert message.startswith(f"{path}:2: feature 'google' field (feature): feature 'google' has")
    assert "no SLO with min_samples > 0" in message
    assert "promote_without_traffic: true" in message
    zero = edited("min_samples: 200", "min_samples: 0")
    message, path = load_error(
        tmp_path, edited("max: 0.5", "max: 0.5\n        min_samples: 0", zero)
    )
    assert "no SLO with min_samples > 0" in message


def test_promote_without_traffic_is_an_explicit_opt_in_of_the_feature(tmp_path: Path) -> None:
    text = LATENCY_ONLY.replace("    slos:", "    promote_without_traffic: true\n    slos:")
    assert load(tmp_path, text).feature("google").promote_without_traffic is True
    in_defaults = "defaults:\n  promote_without_traffic: true\n" + LATENCY_ONLY
    message, _ = load_error(tmp_path, in_defaults)
    assert "unknown key 'promote_without_traffic' under 'defaults'" in message
    in_profile = "profiles:\n  quiet:\n    promote_without_traffic: true\n" + LATENCY_ONLY.replace(
        "  google:\n", "  google:\n    profile: quiet\n"
    )
    message, path = load_error(tmp_path, in_profile)
    assert message.startswith(f"{path}:3: profile 'quiet' sets 'promote_without_traffic'")


def test_freeze_days_accept_abbreviations_and_full_names_in_any_case(tmp_path: Path) -> None:
    text = with_feature_field("freeze: [{days: [Friday, SAT, sun], start: 17:30, end: '06:00'}]")
    (window,) = load(tmp_path, text).feature("google").freeze
    assert window.days == ("fri", "sat", "sun")
    assert (window.start, window.end) == (time(17, 30), time(6, 0))


def test_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration .*create rollouts\.yaml"):
        load_config(tmp_path / "absent.yaml")


def test_an_unknown_feature_lists_the_configured_ones(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    with pytest.raises(ConfigError, match=r"'outlook' is not in .*configured features: google"):
        config.feature("outlook")
    assert [spec.name for spec in config.select(None)] == ["google"]
    with pytest.raises(InvalidFeatureName):
        config.select(["a:b*"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations_parse(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15 minutes", "m15", "1.5h", True, -5])
def test_bad_durations_say_what_is_expected(text: str | int | bool) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 30s, 15m, 1h"):
        parse_duration(text)


def test_feature_names_stop_key_injection() -> None:
    assert validate_feature_name("gmail.send-v2_b") == "gmail.send-v2_b"
    for bad in ["Goo gle", "a:b*", "google}", "", "_google"]:
        with pytest.raises(InvalidFeatureName, match="expected"):
            validate_feature_name(bad)


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline\.yaml:8: feature 'google' field dwell"):
        parse_config(with_feature_field("dwell: 5x"), source="inline.yaml")


def test_a_ladder_step_finer_than_the_gates_0_01_is_refused_at_its_line(tmp_path: Path) -> None:
    text = with_feature_field("ladder: [0, 33.3333333, 66.6666667, 100]")
    message, path = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, 'ladder: [0, 33.3')}: feature 'google' field ladder:" in message
    assert "ladder step 33.3333333 has more than 2 decimals" in message and "33.33" in message
    fine = with_feature_field("ladder: [0, 0.01, 33.33, 100]")
    assert load(tmp_path, fine).feature("google").ladder == (0, 0.01, 33.33, 100)


@pytest.mark.parametrize(
    "line",
    [
        'promote_without_traffic: "yes"',
        'promote_without_traffic: "true"',
        "promote_without_traffic: 1",
    ],
)
def test_a_switch_written_as_a_string_or_number_is_refused(tmp_path: Path, line: str) -> None:
    text = with_feature_field(line)
    message, path = load_error(tmp_path, text)
    assert f"{path}:{line_of(text, line)}: feature 'google' field promote_without_traffic:" in (
        message
    )
    assert "is not a boolean; write true or false, unquoted" in message


def test_absent_is_zero_written_as_a_string_is_refused(tmp_path: Path) -> None:
    count = "      - {name: failures, kind: count, query: sum(f), max: 5, absent_is_zero: 'no'}\n"
    message, _ = load_error(tmp_path, BASE + count)
    assert "absent_is_zero" in message and "'no' is not a boolean" in message


GROUPED = """\
profiles:
  gmail:
    slos:
      - name: error_rate
        group_by: provider
        ratio: {errors: sum by (provider) (e), total: sum by (provider) (t)}
        max: 0.01
features:
  google: {profile: gmail}
  google-v2:
    profile: gmail
    metric_key: google
  google_ws: {profile: gmail, metric_key: google_ws}
"""


def test_two_features_reading_the_same_grouped_series_are_refused_naming_both(
    tmp_path: Path,
) -> None:
    message, path = load_error(tmp_path, GROUPED)
    assert f"{path}:{line_of(GROUPED, 'metric_key: google')}: feature 'google-v2' reads " in (
        message
    )
    assert "the same series as feature 'google' (provider='google'" in message
    assert "give 'google-v2' the metric_key its own series carry" in message
    own = GROUPED.replace("metric_key: google\n", "metric_key: google_v2\n")
    assert load(tmp_path, own).feature("google-v2").series_key == "google_v2"


def test_features_sharing_a_series_key_without_group_by_are_accepted(tmp_path: Path) -> None:
    text = with_feature_field("metric_key: other") + (
        "  other:\n    slos: [{name: e, ratio: {errors: sum(e2), total: sum(t2)}, max: 0.01}]\n"
    )
    assert set(load(tmp_path, text).features) == {"google", "other"}


@pytest.mark.parametrize(
    ("quantile", "said"),
    [
        ("95", "histogram_quantile(95, ...) asks for the 9500th percentile"),
        ("-0.5", "histogram_quantile(-0.5, ...) asks for the -50th percentile"),
        ("1.5", "histogram_quantile(1.5, ...) asks for the 150th percentile"),
        ("  99.9 ", "histogram_quantile(99.9, ...) asks for the 9990th percentile"),
        ("9.5e1", "histogram_quantile(9.5e1, ...) asks for the 9500th percentile"),
        ("0x5F", "histogram_quantile(0x5F, ...) asks for the 9500th percentile"),
        ("- 2", "histogram_quantile(-2, ...) asks for the -200th percentile"),
        ("Inf", "histogram_quantile(Inf, ...) asks for no percentile"),
        ("NaN", "histogram_quantile(NaN, ...) asks for no percentile"),
    ],
)
def test_a_literal_quantile_outside_0_to_1_is_refused_naming_the_slo_the_value_and_the_fix(
    tmp_path: Path, quantile: str, said: str
) -> None:
    text = edited("histogram_quantile(0.95,", f"histogram_quantile({quantile},")
    message, path = load_error(tmp_path, text)
    assert message.startswith(f"{path}:{line_of(text, 'latency_p95')}: feature 'google' ")
    assert f"field slos.1: SLO 'latency_p95': {said}; a quantile is between 0 and 1 (" in (message)
    assert len(message.splitlines()) == 1


def test_a_percent_typed_for_a_quantile_is_refused_with_the_quantile_it_meant(
    tmp_path: Path,
) -> None:
    for typed, meant in (("95", "0.95 for p95"), ("99.9", "0.999 for p99.9")):
        message, _ = load_error(tmp_path, edited("(0.95,", f"({typed},"))
        assert message.endswith(f"a quantile is between 0 and 1 ({meant})")
    message, _ = load_error(tmp_path, edited("(0.95,", "(-0.5,"))
    assert message.endswith("a quantile is between 0 and 1 (0.95 for p95)")


@pytest.mark.parametrize(
    "query",
    [
        "max(histogram_quantile(0.95, a), histogram_quantile(95, b))",
        "histogram_quantile(0.5, a) + histogram_quantile(0.9, b) * histogram_quantile(95, c)",
        "max_over_time(histogram_quantile(95, sum by (le) (rate(a[5m])))[1h:])",
        "histogram_quantile\n  (\n    95,\n    a\n  )",
    ],
)
def test_every_histogram_quantile_in_a_query_is_checked_nested_or_not(
    tmp_path: Path, query: str
) -> None:
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    message, _ = load_error(tmp_path, text)
    assert "SLO 'latency_p95': histogram_quantile(95, ...) asks for the 9500th percentile" in (
        message
    )


def test_the_samples_and_ratio_queries_are_checked_for_a_quantile_too(tmp_path: Path) -> None:
    samples = edited("max: 0.5", "max: 0.5\n        samples: histogram_quantile(95, t)")
    assert "SLO 'latency_p95': histogram_quantile(95, ...)" in load_error(tmp_path, samples)[0]
    for field in ("errors", "total"):
        quoted = json.dumps(f"histogram_quantile(1.5, {field})")  # a comma in a flow mapping
        ratio = edited(f"{field}: sum({field})", f"{field}: {quoted}")
        message, _ = load_error(tmp_path, ratio)
        assert "field slos.0: SLO 'error_rate': histogram_quantile(1.5, ...) asks for" in message


@pytest.mark.parametrize(
    "quantile", ["0.95", "1", "0", "1.0", ".99", "0e0", "95 / 100", "scalar(q)", "$quantile"]
)
def test_a_quantile_between_0_and_1_or_not_a_literal_is_accepted(
    tmp_path: Path, quantile: str
) -> None:
    query = f"histogram_quantile({quantile}, latency)"
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    assert load(tmp_path, text).feature("google").slos[1].query == query


def test_a_placeholder_quantile_is_an_expression_and_is_accepted(tmp_path: Path) -> None:
    query = "histogram_quantile({{segment}}, latency)"
    text = with_feature_field("segments: {by: region, values: [eu, us]}")
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query), text)
    assert load(tmp_path, text).feature("google").slos[1].query == query


def test_a_name_ending_in_histogram_quantile_is_not_the_function(tmp_path: Path) -> None:
    query = "my_histogram_quantile(95, latency)"
    text = edited("histogram_quantile(0.95, latency)", query)
    assert load(tmp_path, text).feature("google").slos[1].query == query


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("quantile(95, latency)", "quantile(95, ...) asks for the 9500th percentile"),
        (
            "max(quantile_over_time(99, latency[5m]))",
            "quantile_over_time(99, ...) asks for the 9900th percentile",
        ),
    ],
)
def test_quantile_and_quantile_over_time_are_checked_like_histogram_quantile(
    tmp_path: Path, query: str, said: str
) -> None:
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    assert (
        f"SLO 'latency_p95': {said}; a quantile is between 0 and 1"
        in (load_error(tmp_path, text)[0])
    )
    fine = query.replace("(95,", "(0.95,").replace("(99,", "(0.99,")
    accepted = edited("histogram_quantile(0.95, latency)", json.dumps(fine))
    assert load(tmp_path, accepted).feature("google").slos[1].query == fine


def promtool_parses(tmp_path: Path, queries: list[str]) -> None:
    """The real PromQL parser accepts every query: each case below is PromQL a user can write."""
    rules = "".join(f"  - record: r{n}\n    expr: {json.dumps(q)}\n" for n, q in enumerate(queries))
    path = tmp_path / "rules.yml"
    path.write_text(f"groups:\n- name: r\n  rules:\n{rules}", encoding="utf-8")
    argv = [require_binary("promtool"), "check", "rules", str(path)]
    checked = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def valid_and_loaded(tmp_path: Path, query: str) -> None:
    """promtool accepts the query and the file loads it as the latency SLO's query."""
    promtool_parses(tmp_path, [query])
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    assert load(tmp_path, text).feature("google").slos[1].query == query


SPELLED = [
    ("quantile by (route) (95, rate(a[5m]))", "quantile(95, ...)"),
    ("quantile without (instance) (95, rate(a[5m]))", "quantile(95, ...)"),
    ("QUANTILE(95, rate(a[5m]))", "QUANTILE(95, ...)"),
    ("Quantile by (route) (95, rate(a[5m]))", "Quantile(95, ...)"),
    ("quantile BY(route)(99, rate(a[5m]))", "quantile(99, ...)"),
    ("quantile(95, rate(a[5m])) by (route)", "quantile(95, ...)"),
    ("histogram_quantile((95), sum by (le) (rate(b[5m])))", "histogram_quantile(95, ...)"),
    ("histogram_quantile(( ( 95 ) ), latency)", "histogram_quantile(95, ...)"),
    ("quantile_over_time((99), latency[5m])", "quantile_over_time(99, ...)"),
]


def test_every_spelling_of_a_quantile_with_a_percent_typed_is_valid_promql(
    tmp_path: Path,
) -> None:
    promtool_parses(tmp_path, [query for query, _ in SPELLED])


@pytest.mark.parametrize(("query", "said"), SPELLED, ids=[query for query, _ in SPELLED])
def test_a_percent_typed_for_a_quantile_is_refused_however_the_aggregation_is_spelled(
    tmp_path: Path, query: str, said: str
) -> None:
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    message, _ = load_error(tmp_path, text)
    assert f"field slos.1: SLO 'latency_p95': {said} asks for the " in message
    assert "a quantile is between 0 and 1 (0." in message
    assert len(message.splitlines()) == 1
    fine = query.replace("95", "0.95").replace("99", "0.99")
    assert load(tmp_path, edited("histogram_quantile(0.95, latency)", json.dumps(fine)))


ACCEPTED = [
    "histogram_quantile((0.95), latency)",
    "QUANTILE by (route) (0.95, rate(a[5m]))",
    "histogram_quantile((95 / 100), latency)",
    "histogram_quantile(1e0, latency)",
    "histogram_quantile(+1, latency)",
    "sum by (quantile) (rate(a[5m]))",
]


@pytest.mark.parametrize("query", ACCEPTED)
def test_a_quantile_in_range_or_an_expression_in_parentheses_is_accepted(
    tmp_path: Path, query: str
) -> None:
    valid_and_loaded(tmp_path, query)


def test_an_upper_case_histogram_quantile_is_not_the_function_so_it_is_left_to_prometheus(
    tmp_path: Path,
) -> None:
    """PromQL function names are case-sensitive: Prometheus itself refuses this name."""
    query = "HISTOGRAM_QUANTILE(95, latency)"
    text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
    assert load(tmp_path, text).feature("google").slos[1].query == query


COMMENTED = (
    "# p95 (was histogram_quantile(95, ...) until the incident of 2026-11-29)\n"
    "histogram_quantile(0.95, sum by (le) (rate(action_latency_seconds_bucket[5m])))\n"
)
IN_STRINGS = [
    'label_replace(histogram_quantile(0.95, latency), "note", "quantile(99, raw)", "", "")',
    "label_replace(histogram_quantile(0.95, latency), 'note', 'quantile(99, raw)', '', '')",
    'label_replace(histogram_quantile(0.95, latency), "n", "a\\"quantile(99, b)#", "", "")',
    "label_replace(histogram_quantile(0.95, latency), `n`, `quantile(99, raw)`, ``, ``)",
]


@pytest.mark.parametrize("query", [COMMENTED, *IN_STRINGS])
def test_a_valid_p95_query_mentioning_a_quantile_in_a_comment_or_a_string_loads(
    tmp_path: Path, query: str
) -> None:
    valid_and_loaded(tmp_path, query)


def test_a_comment_ends_at_the_line_and_a_hash_in_a_string_starts_no_comment(
    tmp_path: Path,
) -> None:
    for query in (
        "# p95\nhistogram_quantile(95, latency)",
        'label_replace(histogram_quantile(95, latency), "n", "#", "", "")',
    ):
        promtool_parses(tmp_path, [query])
        text = edited("histogram_quantile(0.95, latency)", json.dumps(query))
        message, _ = load_error(tmp_path, text)
        assert "SLO 'latency_p95': histogram_quantile(95, ...) asks for the 9500th" in message
