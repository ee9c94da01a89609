"""The alert rules, their promtool unit tests, their runbooks and the Alertmanager routing.

promtool and amtool are required: a missing binary fails here (MissingServer), it never skips.
"""

from __future__ import annotations

import functools
import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.servers import require_binary
from rollout_core.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "observability" / "prometheus-alerts.yml"
PROMTOOL_TESTS = sorted((REPO_ROOT / "observability" / "tests").glob("*.yml"))
ALERTMANAGER_FILE = REPO_ROOT / "observability" / "alertmanager.yml"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks"
RECEIVER_BY_SEVERITY = {"page": "rollout-oncall", "ticket": "rollout-tickets"}
ABORT_RECEIVER = "rollout-abort"  # the alert bridge
# Which policy SLO in rollouts.yaml each original threshold alert mirrors.
ALERT_FOR_POLICY_SLO = {
    "error_rate": "GmailErrorRateHigh",
    "latency_p95": "GmailLatencySlow",
    "oauth_refresh_failures": "OAuthRefreshFailures",
}


@functools.cache
def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule in the rules file, by name."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


@functools.cache
def promtool_tests() -> dict[str, list[dict[str, Any]]]:
    """The alert_rule_test entries of every promtool test, by file and test name."""
    tests: dict[str, list[dict[str, Any]]] = {}
    for path in PROMTOOL_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            tests[f"{path.name}: {test.get('name')}"] = test.get("alert_rule_test") or []
    return tests


def timeline(cases: list[dict[str, Any]], name: str) -> list[tuple[float, bool]]:
    """(eval minute, expected to fire) for one alert within one promtool test, in time order."""
    return sorted(
        (parse_minutes(case["eval_time"]), bool(case.get("exp_alerts")))
        for case in cases
        if case["alertname"] == name
    )


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_rules_file_passes_promtool_check() -> None:
    result = run([require_binary("promtool"), "check", "rules", str(RULES_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_promtool_unit_test_files() -> None:
    assert PROMTOOL_TESTS, "no promtool test files under observability/tests/"


@pytest.mark.parametrize("test_file", PROMTOOL_TESTS, ids=lambda path: path.name)
def test_the_promtool_unit_tests_pass(test_file: Path) -> None:
    result = run([require_binary("promtool"), "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_cases_name_only_alerts_that_exist() -> None:
    named = {case["alertname"] for cases in promtool_tests().values() for case in cases}
    assert named - set(alert_rules()) == set()


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_every_alert_has_a_promtool_test_where_it_is_silent_first_then_fires(name: str) -> None:
    """Silent before the condition has held for `for`, firing after: a new alert needs one."""
    shown = [
        test
        for test, cases in promtool_tests().items()
        if any(
            not fires_before and fires_after
            for (_, fires_before), (_, fires_after) in itertools.pairwise(timeline(cases, name))
        )
    ]
    assert shown, (
        f"{name}: add a promtool test in observability/tests/ that shows it silent, then firing"
    )


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_every_alert_has_a_promtool_test_where_healthy_series_keep_it_silent(name: str) -> None:
    shown = [
        test
        for test, cases in promtool_tests().items()
        if (steps := timeline(cases, name)) and not any(fires for _, fires in steps)
    ]
    assert shown, f"{name}: add a promtool test in observability/tests/ with healthy series"


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_every_alert_has_labels_annotations_and_a_runbook_that_exists(name: str) -> None:
    rule = alert_rules()[name]
    assert rule["labels"]["severity"] in RECEIVER_BY_SEVERITY
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert re.search(r"\$value \| humanize", annotations["description"]), (
        f"{name}: the description must show the value through a humanize function"
    )
    assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"
    runbook = REPO_ROOT / annotations["runbook_url"]
    assert runbook.is_file(), f"{name}: write {runbook.relative_to(REPO_ROOT)}"
    assert "rollback-procedures.md" in runbook.read_text(), f"{name}: link the procedures"


def test_the_runbook_index_lists_every_alert() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in alert_rules():
        assert f"({name}.md)" in index, f"docs/runbooks/README.md does not link {name}.md"


def test_runbook_links_point_at_files_and_headings_that_exist() -> None:
    for page in RUNBOOKS.glob("*.md"):
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)", page.read_text()):
            linked = RUNBOOKS / target
            assert linked.is_file(), f"{page.name} links a missing {target}"
            if anchor:
                assert anchor in heading_anchors(linked), f"{page.name} links {target}#{anchor}"


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors: headings lower-cased, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in headings}


def test_the_threshold_alerts_use_the_limits_of_the_policy_slos() -> None:
    """An alert that disagrees with the policy pages for what the controller calls healthy."""
    google = load_config(REPO_ROOT / "rollouts.yaml").feature("google")
    rules = alert_rules()
    for slo in google.slos:
        expr = rules[ALERT_FOR_POLICY_SLO[slo.name]]["expr"]
        # the first `> number` at the end of a line: the threshold (guards follow it)
        threshold = float(re.findall(r">\s*([0-9.]+)\s*$", expr, flags=re.MULTILINE)[0])
        assert threshold == slo.max, f"{slo.name}: alert {threshold} != policy max {slo.max}"


def recorded(name: str) -> dict[str, Any]:
    """The recording rule `name`."""
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    [rule] = [rule for group in groups for rule in group["rules"] if rule.get("record") == name]
    return dict(rule)


def test_the_minimum_calls_per_window_is_the_policys_min_samples_for_the_error_rate() -> None:
    """The alerts need the evidence the controller needs before it judges an error ratio."""
    google = load_config(REPO_ROOT / "rollouts.yaml").feature("google")
    [error_rate] = [slo for slo in google.slos if slo.name == "error_rate"]
    assert recorded("provider_action:min_requests:count")["expr"] == (
        f"vector({error_rate.min_samples})"
    )


@pytest.mark.parametrize(
    "name", sorted(name for name, rule in alert_rules().items() if "action_errors" in rule["expr"])
)
def test_every_error_ratio_window_of_an_alert_is_guarded_by_the_minimum_calls(name: str) -> None:
    expr = " ".join(alert_rules()[name]["expr"].split())
    windows = re.findall(r"provider_action:action_errors:ratio_rate(\w+)", expr)
    assert windows, f"{name} reads no recorded error ratio"
    for window in windows:
        guard = (
            f"provider_action:action_exec:increase{window} >= on (provider, action) "
            "provider_action:min_requests:count"
        )
        assert guard in expr, (
            f"{name}: its {window} ratio needs `and on (provider, action) {guard}`"
        )
        counted = recorded(f"provider_action:action_exec:increase{window}")["expr"]
        assert re.search(rf"increase\(action_exec_total\{{.*\}}\[{window}\]\)", counted), counted


def test_the_slo_target_is_set_in_exactly_one_place() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    assert [expr for expr in exprs if "0.99" in expr] == ["vector(0.99)"]


def test_the_alertmanager_config_passes_amtool() -> None:
    result = run([require_binary("amtool"), "check-config", str(ALERTMANAGER_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_every_alert_routes_to_the_receiver_of_its_severity(name: str) -> None:
    labels = {"alertname": name, **alert_rules()[name]["labels"]}
    expected = RECEIVER_BY_SEVERITY[labels["severity"]]
    if "rollout_feature" in labels:  # the fast abort: the bridge first, then the people
        expected = f"{ABORT_RECEIVER},{expected}"
    argv = [require_binary("amtool"), "config", "routes", "test"]
    argv += [f"--config.file={ALERTMANAGER_FILE}", f"--verify.receivers={expected}"]
    argv += [f"{key}={value}" for key, value in labels.items()]
    result = run(argv)
    assert result.returncode == 0, f"{name} routes to {result.stdout.strip()}, not {expected}"


def parse_minutes(duration: str) -> float:
    """A Prometheus duration such as `1h30m` or `90s`, in minutes."""
    units = {"h": 60.0, "m": 1.0, "s": 1 / 60}
    parts = re.findall(r"(\d+)([hms])", str(duration))
    assert parts or str(duration) == "0", f"cannot read the duration {duration!r}"
    return sum(int(amount) * units[unit] for amount, unit in parts)


def test_the_minimum_calls_is_set_in_exactly_one_place() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    assert [expr for expr in exprs if re.search(r"\b200\b", expr)] == ["vector(200)"]


def test_every_fast_abort_alert_names_a_feature_that_lists_it_in_abort_on() -> None:
    config = load_config(REPO_ROOT / "rollouts.yaml")
    fast = {n: r for n, r in alert_rules().items() if "rollout_feature" in r["labels"]}
    assert fast, "no alert carries a rollout_feature label"
    for name, rule in fast.items():
        feature = config.feature(rule["labels"]["rollout_feature"])
        assert name in feature.abort_on, f"{name}: add it to {feature.name}'s abort_on"
        assert "{{ $value }}" in rule["annotations"]["value"], f"{name}: a `value` annotation"


def test_the_fast_abort_uses_the_policy_limit_of_the_error_rate() -> None:
    google = load_config(REPO_ROOT / "rollouts.yaml").feature("google")
    [error_rate] = [slo for slo in google.slos if slo.name == "error_rate"]
    expr = alert_rules()["GmailErrorRateFast"]["expr"]
    assert f"provider_action:action_errors:ratio_rate1m > {error_rate.max}" in expr


def test_the_abort_route_waits_seconds_not_the_default_30() -> None:
    config = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    [route] = [r for r in config["route"]["routes"] if r["receiver"] == ABORT_RECEIVER]
    assert route["continue"] is True and parse_minutes(route["group_wait"]) <= 5 / 60
    [receiver] = [r for r in config["receivers"] if r["name"] == ABORT_RECEIVER]
    [webhook] = receiver["webhook_configs"]
    assert webhook["url"].endswith("/alerts") and webhook["http_config"]["authorization"]


def runbook_section(page: str, start: str, end: str) -> str:
    """The text of a runbook from `start` up to the next `end` after it."""
    text = (RUNBOOKS / page).read_text(encoding="utf-8")
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


def test_the_stall_triage_for_a_recent_push_names_a_broken_schedule_with_abort_runs() -> None:
    """Fast-abort and manual runs push without moving the last success, so "success old, push
    recent" is also a broken schedule: the triage must say so and how to tell."""
    branch = runbook_section("RolloutControllerStalled.md", "success old, push recent", "\n   - ")
    assert "abort" in branch, branch
    assert "schedule is broken" in branch, branch
    assert "auto_scheduled" in branch, branch  # how to tell the schedule's runs from the rest
    assert "RolloutControllerFailing" in branch, branch  # the other cause keeps its pointer


def test_the_stall_resolves_on_a_run_the_schedule_created_not_on_a_manual_run() -> None:
    resolved = runbook_section("RolloutControllerStalled.md", "## Resolved when", "evaluation.")
    assert "schedule created" in resolved, resolved
    assert "manual run" in resolved and "does not resolve it" in resolved, resolved


def test_the_stall_alert_does_not_claim_nothing_is_rolled_back() -> None:
    """Abort runs still roll features back while the schedule is broken."""
    description = alert_rules()["RolloutControllerStalled"]["annotations"]["description"]
    assert "rolled back automatically" not in description
    assert "fast abort" in description
