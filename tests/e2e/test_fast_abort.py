"""The fast abort on real servers: Prometheus fires GmailErrorRateFast -> Alertmanager -> the
alert bridge (`rollout alert-bridge`) -> the Prefect event -> the abort deployment's trigger ->
the abort run on the worker -> the rollback in Redis. Also a paused feature, an alert not in
abort_on, a bad token, and a scheduled run started at the same moment as an abort.

The rules are a test copy with the 1-minute window as 10 s and every `for` as 1 s, so the
whole path takes seconds; every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from deployments.alert_bridge import ABORT_DEPLOYMENT
from deployments.kill_switch import CONTROLLER_DEPLOYMENT
from deployments.sample_service import SampleService
from deployments.servers import (
    RunningServer,
    free_port,
    start_alertmanager,
    start_prometheus,
)
from deployments.stack import (
    alertmanager_config_for_bridge,
    make_abort_live,
    start_alert_bridge,
    stop_process_group,
)
from rollout_sdk.keys import ABORT_EPISODES_HASH
from tests.e2e.conftest import Stack
from tests.integration.conftest import audit_entries, seed_flag
from tests.integration.traffic import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "observability" / "prometheus-alerts.yml"
ALERTMANAGER_FILE = REPO_ROOT / "observability" / "alertmanager.yml"
FAST_ALERT = "GmailErrorRateFast"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def rules_scaled_down(text: str) -> str:
    """The rules with the fast abort's 1-minute window as 10 s and every `for` as 1 s."""
    assert "[1m]" in text, "the fast abort rules no longer use a [1m] window"
    rules = yaml.safe_load(text.replace("[1m]", "[10s]"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return yaml.safe_dump(rules, sort_keys=False)


@dataclass
class AbortPath:
    traffic: SampleService
    prometheus: RunningServer
    alertmanager: RunningServer
    bridge: RunningServer
    token: str
    api: str
    flags: redis.Redis


def request_json(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}
    )
    for attempt in range(4):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            # a busy Prefect server answers 503 (its database locked) and did nothing: its own
            # client retries these, so does this helper
            if error.code != 503 or attempt == 3:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def abort_path(
    stack_ready: Stack,
    worker: Any,
    prefect_api: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AbortPath]:
    root = tmp_path_factory.mktemp("fast-abort")
    token = secrets.token_urlsafe(16)
    rules = root / "rules.yml"
    rules.write_text(rules_scaled_down(RULES_FILE.read_text()), encoding="utf-8")
    bridge_port = free_port()
    with SampleService(providers=["google"]) as traffic:
        bridge = start_alert_bridge(
            root / "bridge", bridge_port, token, prefect_api, REPO_ROOT / "rollouts.yaml"
        )
        config = alertmanager_config_for_bridge(
            ALERTMANAGER_FILE, root / "am" / "alertmanager.yml", f"{bridge.url}/alerts", token
        )
        alertmanager = start_alertmanager(root / "am", config)
        prometheus = start_prometheus(
            root / "prometheus",
            scrape_targets={"sample": [traffic.host_port]},
            rule_files=[rules],
            alertmanager=alertmanager.host_port,
        )
        make_abort_live(prefect_api)
        flags = redis.Redis.from_url(stack_ready.env["REDIS_URL"], decode_responses=True)
        try:
            yield AbortPath(traffic, prometheus, alertmanager, bridge, token, prefect_api, flags)
        finally:
            make_abort_live(prefect_api, live=False)  # prefect.yaml's dry run, for other tests
            prometheus.stop()
            alertmanager.stop()
            stop_process_group(bridge.process, signal.SIGTERM)


def abort_runs(api: str) -> list[dict[str, Any]]:
    deployment = request_json(f"{api}/deployments/name/{ABORT_DEPLOYMENT}")
    runs: list[dict[str, Any]] = request_json(
        f"{api}/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}, "limit": 200},
    )
    return runs


def finished_abort_run(api: str, case: str, timeout: float = 90) -> dict[str, Any]:
    """The abort run of the alert labelled `case=<case>`, once it has finished."""

    def of_case() -> list[dict[str, Any]]:
        return [
            run
            for run in abort_runs(api)
            if (run["parameters"].get("alert") or {}).get("labels", {}).get("case") == case
            and run["state"]["type"] in FINAL
        ]

    [run] = poll(of_case, bool, timeout=timeout, what=f"the abort run for case={case}")
    return run


@pytest.fixture
def posted(abort_path: AbortPath) -> Iterator[list[dict[str, Any]]]:
    """The alerts a test posts to Alertmanager, resolved at its end: an episode that held
    (paused) would otherwise abort at its next resend, in the next test."""
    alerts: list[dict[str, Any]] = []
    yield alerts
    ended = datetime.now(UTC).isoformat()
    request_json(
        f"{abort_path.alertmanager.url}/api/v2/alerts",
        [{**alert, "endsAt": ended} for alert in alerts],
    )


def fire_through_alertmanager(
    path: AbortPath, posted: list[dict[str, Any]], name: str, case: str
) -> None:
    """An alert posted to Alertmanager's API, as Prometheus posts one."""
    alert = {
        "labels": {
            "alertname": name,
            "rollout_feature": "google",
            "severity": "ticket",
            "case": case,
        },
        "annotations": {"value": "0.5"},
        "startsAt": datetime.now(UTC).isoformat(),
    }
    posted.append(alert)
    request_json(f"{path.alertmanager.url}/api/v2/alerts", [alert])


def test_a_caller_without_the_token_is_refused_with_401(abort_path: AbortPath) -> None:
    body = {"version": "4", "alerts": []}
    with pytest.raises(urllib.error.HTTPError) as refused:
        request_json(f"{abort_path.bridge.url}/alerts", body, {"Authorization": "Bearer nope"})
    assert refused.value.code == 401
    accepted = request_json(
        f"{abort_path.bridge.url}/alerts", body, {"Authorization": f"Bearer {abort_path.token}"}
    )
    assert accepted == {"emitted": 0, "ignored": 0}


def test_a_firing_fast_alert_rolls_the_feature_back_through_the_whole_path(
    abort_path: AbortPath,
) -> None:
    flags = abort_path.flags
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))
    before = len(audit_entries(flags, "google"))
    abort_path.traffic.inject(error_rate=0.08)
    try:
        poll(
            lambda: flags.get("flags:google:rollout_percent"),
            lambda percent: percent == "10",
            timeout=120,
            what="the abort to roll google back to 10%",
        )
        [entry] = audit_entries(flags, "google")[before:]
        assert entry["action"] == "rollback" and entry["dry_run"] == "false"
        # the abort's headline; the session's SLOs may breach too (earlier tests' faults)
        assert entry["reason"].startswith(f"Rollback 50% -> 10% on alert:{FAST_ALERT}")
        assert 'rollout_feature="google"' in entry["reason"]
        [episode] = flags.hkeys(ABORT_EPISODES_HASH)
        assert episode.startswith(f"google|{FAST_ALERT}|")
        runs = poll(
            lambda: abort_runs(abort_path.api),
            lambda runs: bool(runs) and all(r["state"]["type"] in FINAL for r in runs),
            timeout=60,
            what="the abort run to finish",
        )
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
        assert runs[0]["state"]["message"].startswith(f"live, abort on {FAST_ALERT}: ")
    finally:
        abort_path.traffic.inject(error_rate=0.002)


def test_an_alert_not_in_abort_on_changes_nothing(
    abort_path: AbortPath, posted: list[dict[str, Any]]
) -> None:
    flags = abort_path.flags
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))
    before = len(audit_entries(flags, "google"))
    fire_through_alertmanager(abort_path, posted, "GmailSomethingElse", "not-listed")
    run = finished_abort_run(abort_path.api, "not-listed")
    assert run["state"]["type"] == "COMPLETED" and run["state"]["name"] == "Ignored"
    assert "not in google's abort_on" in run["state"]["message"]
    assert flags.get("flags:google:rollout_percent") == "50"
    assert len(audit_entries(flags, "google")) == before


def test_a_scheduled_run_at_the_same_moment_never_cancels_or_undoes_the_abort(
    abort_path: AbortPath, posted: list[dict[str, Any]]
) -> None:
    """A scheduled run and an abort started together. Whatever the order and whatever the
    session's SLOs say (the scheduled run may promote 50 -> 100, hold, or roll back on its own),
    the abort is not cancelled, google ends at or below the safe step, and every write has
    exactly one audit entry, each starting from what the previous one left: two runs that read
    the same 50% write once (the other holds on "concurrent change")."""
    api = abort_path.api
    # the scheduled run must be allowed to act: a run of a switched-off controller is skipped
    was_off = set_controller_switch(api, on=True)
    try:
        race_a_scheduled_run_with_an_abort(abort_path, posted)
    finally:
        if was_off:
            set_controller_switch(api, on=False)


def set_controller_switch(api: str, on: bool) -> bool:
    """Resume or pause the controller deployment; whether it was switched off before."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.kill_switch import pause_controller, read_switch, resume_controller

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        was_off = read_switch(client).is_switched_off
        (resume_controller if on else pause_controller)(client)
    return was_off


def race_a_scheduled_run_with_an_abort(abort_path: AbortPath, posted: list[dict[str, Any]]) -> None:
    flags, api = abort_path.flags, abort_path.api
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2))
    before = len(audit_entries(flags, "google"))
    controller = request_json(f"{api}/deployments/name/{CONTROLLER_DEPLOYMENT}")
    scheduled = request_json(
        f"{api}/deployments/{controller['id']}/create_flow_run",
        {"parameters": {"dry_run": False}},
    )
    fire_through_alertmanager(abort_path, posted, FAST_ALERT, "race")
    abort = finished_abort_run(api, "race")
    schedule_run = poll(
        lambda: request_json(f"{api}/flow_runs/{scheduled['id']}"),
        lambda run: run["state"]["type"] in FINAL,
        timeout=90,
        what="the scheduled run to finish",
    )
    assert abort["state"]["type"] == "COMPLETED", abort["state"]
    assert schedule_run["state"]["type"] == "COMPLETED", schedule_run["state"]
    percent = flags.get("flags:google:rollout_percent")
    assert percent in ("10", "0")
    written = audit_entries(flags, "google")[before:]
    assert written, "neither run wrote"
    chain = ["50", *(entry["new_percent"] for entry in written)]
    assert [entry["old_percent"] for entry in written] == chain[:-1]  # no write lost or doubled
    assert chain[-1] == percent
    assert len([e for e in written if f"alert:{FAST_ALERT}" in e["reason"]]) <= 1
    messages = abort["state"]["message"] + schedule_run["state"]["message"]
    if len(written) == 1:  # the two read the same 50%: one wrote, the other held
        assert "concurrent change" in messages or "hold" in messages, messages


def test_a_paused_feature_stays_as_it_is(
    abort_path: AbortPath, posted: list[dict[str, Any]]
) -> None:
    """Last in this module: a held episode is not used up, so a resend (any change to its
    Alertmanager group) after the feature is resumed would abort it then, by design."""
    flags = abort_path.flags
    seed_flag(flags, "google", 50, changed_ago=timedelta(hours=2), paused=True)
    before = len(audit_entries(flags, "google"))
    fire_through_alertmanager(abort_path, posted, FAST_ALERT, "paused")
    run = finished_abort_run(abort_path.api, "paused")
    assert run["state"]["type"] == "COMPLETED"
    assert run["state"]["message"].endswith("1 feature(s): 1 hold")
    assert flags.get("flags:google:rollout_percent") == "50"
    assert len(audit_entries(flags, "google")) == before
