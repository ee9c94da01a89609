"""The stall alert in a real Prometheus fed by a real Pushgateway, and on to a real Alertmanager.

The rules are a test copy with durations of seconds (`rules_with_short_durations`), so the
whole alert life cycle takes seconds; every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    delete_from_gateway,
    push_to_gateway,
)

from deployments.servers import RunningServer
from tests.integration.traffic import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "observability" / "prometheus-alerts.yml"
ALERTMANAGER_FILE = REPO_ROOT / "observability" / "alertmanager.yml"
STALL_ALERT = "RolloutControllerStalled"
STALL_THRESHOLD = ">= 1800"  # as written in the rules file
STALL_LOOKBACK = "[15m]"  # how long a vanished last-success series is still remembered
STALL_AFTER_SECONDS = 4
LOOKBACK_SECONDS = 3
FOR_SECONDS = 2


def rules_with_short_durations(
    rules_text: str, stall_after_seconds: int, lookback_seconds: int, for_seconds: int
) -> str:
    """A copy of the rules where every `for` is `for_seconds`, and the stall alert's threshold
    (1800 s) and lookback (15m) are seconds. Fails loudly if they are no longer written so."""
    rules = yaml.safe_load(rules_text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{for_seconds}s"
            if rule.get("alert") == STALL_ALERT:
                expr = rule["expr"]
                for written in (STALL_THRESHOLD, STALL_LOOKBACK):
                    assert written in expr, f"{STALL_ALERT} no longer has {written!r}: {expr}"
                expr = expr.replace(STALL_THRESHOLD, f">= {stall_after_seconds}")
                rule["expr"] = expr.replace(STALL_LOOKBACK, f"[{lookback_seconds}s]")
    return yaml.safe_dump(rules, sort_keys=False)


def alertmanager_for_test(config_text: str, webhook_base: str) -> str:
    """A copy of the Alertmanager config whose webhooks point at `webhook_base` (path kept)
    and whose groups are sent after one second instead of 30."""
    config = yaml.safe_load(config_text)
    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(webhook["url"]).path
            webhook["url"] = webhook_base + path
    return yaml.safe_dump(config, sort_keys=False)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def stall_alert_state(prometheus: RunningServer) -> tuple[str, dict[str, Any] | None]:
    """("inactive" | "pending" | "firing", the alert) from /api/v1/alerts."""
    alerts = get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
    for alert in alerts:
        if alert["labels"]["alertname"] == STALL_ALERT:
            return alert["state"], alert
    return "inactive", None


def stall_rule_evaluated_inactive_since(prometheus: RunningServer, since: float) -> bool:
    """True when the stall rule was evaluated after `since` (epoch seconds) and is inactive."""
    groups = get_json(f"{prometheus.url}/api/v1/rules?type=alert")["data"]["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        if rule["name"] == STALL_ALERT:
            evaluated = parse_rfc3339(rule["lastEvaluation"])
            return rule["state"] == "inactive" and evaluated > since
    raise AssertionError(f"{STALL_ALERT} is not loaded in {prometheus.url}")


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of Go's RFC 3339 time with nanoseconds, which Python parses only to µs."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, f"not an RFC 3339 time: {text!r}"
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float(f"0.{fraction or 0}")


def has_series(prometheus: RunningServer, query: str) -> bool:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    return bool(get_json(url)["data"]["result"])


def knows_an_alertmanager(prometheus: RunningServer) -> bool:
    return bool(get_json(f"{prometheus.url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"])


class ControllerTelemetry:
    """What the controller pushes after a successful run, into a registry of its own."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        self.last_success = Gauge(
            "rollout_controller_last_success_timestamp_seconds", "", registry=self.registry
        )
        self.last_run = Gauge(
            "rollout_controller_last_run_timestamp_seconds", "", registry=self.registry
        )
        self.runs = Counter("rollout_controller_runs", "", ["status"], registry=self.registry)

    def push_successful_run(self) -> None:
        now = time.time()
        self.last_success.set(now)
        self.last_run.set(now)
        self.runs.labels(status="ok").inc()
        push_to_gateway(self.gateway, job="rollout_controller", registry=self.registry)


@pytest.fixture
def short_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules-short.yml"
    path.write_text(
        rules_with_short_durations(
            RULES_FILE.read_text(), STALL_AFTER_SECONDS, LOOKBACK_SECONDS, FOR_SECONDS
        )
    )
    return path


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[tuple[str, dict[str, Any]]]]]:
    """A local HTTP receiver: (its base URL, a queue of (path, JSON body) it was sent)."""
    received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def start_watching_a_succeeding_controller(
    controller: ControllerTelemetry, prometheus: RunningServer
) -> None:
    """Wait until Prometheus holds the pushed last success and has judged the stall alert
    inactive on it; the controller keeps pushing successes meanwhile."""
    series = 'rollout_controller_last_success_timestamp_seconds{job="rollout_controller"}'
    poll(lambda: has_series(prometheus, series), bool, 15, "the pushed series in Prometheus")
    seen_at = time.time()

    def healthy_and_inactive() -> bool:
        controller.push_successful_run()
        return stall_rule_evaluated_inactive_since(prometheus, seen_at)

    poll(healthy_and_inactive, bool, 15, f"{STALL_ALERT} evaluated inactive")


def test_the_stall_alert_goes_pending_then_firing_when_successes_stop(
    prometheus_factory: Callable[..., RunningServer],
    pushgateway: RunningServer,
    short_rules: Path,
) -> None:
    started = time.monotonic()
    controller = ControllerTelemetry(pushgateway.host_port)
    controller.push_successful_run()
    prometheus = prometheus_factory(
        scrape_targets={"pushgateway": [pushgateway.host_port]}, rule_files=[short_rules]
    )
    start_watching_a_succeeding_controller(controller, prometheus)
    states = ["inactive"]
    stopped = time.monotonic()  # the controller stops pushing successes here

    def reached(wanted: str) -> Callable[[], bool]:
        def check() -> bool:
            state, _ = stall_alert_state(prometheus)
            if state != states[-1]:
                states.append(state)
            return state == wanted

        return check

    poll(reached("pending"), bool, STALL_AFTER_SECONDS + 10, f"{STALL_ALERT} pending")
    pending_after = time.monotonic() - stopped
    poll(reached("firing"), bool, FOR_SECONDS + 10, f"{STALL_ALERT} firing")
    firing_after = time.monotonic() - stopped

    assert states == ["inactive", "pending", "firing"]
    _, alert = stall_alert_state(prometheus)
    assert alert is not None
    assert alert["labels"]["severity"] == "page"
    assert "The last successful controller run was" in alert["annotations"]["description"]
    assert float(alert["value"]) >= STALL_AFTER_SECONDS
    print(
        f"\nstall alert: pending {pending_after:.1f}s and firing {firing_after:.1f}s after the "
        f"last success (threshold {STALL_AFTER_SECONDS}s, for {FOR_SECONDS}s); "
        f"test body {time.monotonic() - started:.1f}s"
    )


def test_a_vanished_pushgateway_group_pages_through_alertmanager(
    prometheus_factory: Callable[..., RunningServer],
    alertmanager_factory: Callable[[Path], RunningServer],
    pushgateway: RunningServer,
    short_rules: Path,
    webhook_receiver: tuple[str, queue.Queue[tuple[str, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    webhook_base, received = webhook_receiver
    config = tmp_path / "alertmanager.yml"
    config.write_text(alertmanager_for_test(ALERTMANAGER_FILE.read_text(), webhook_base))
    alertmanager = alertmanager_factory(config)
    controller = ControllerTelemetry(pushgateway.host_port)
    controller.push_successful_run()
    prometheus = prometheus_factory(
        scrape_targets={"pushgateway": [pushgateway.host_port]},
        rule_files=[short_rules],
        alertmanager=alertmanager.host_port,
    )
    # Prometheus drops alerts until it has discovered the Alertmanager (about 5 s after start)
    # and resends only after a minute: the alert must start firing after discovery.
    poll(lambda: knows_an_alertmanager(prometheus), bool, 15, "Alertmanager discovery")
    start_watching_a_succeeding_controller(controller, prometheus)
    delete_from_gateway(pushgateway.host_port, job="rollout_controller")
    deleted = time.monotonic()

    path, body = received.get(timeout=20)

    assert path == "/alerts/page"  # routed by severity to the on-call receiver
    assert body["receiver"] == "rollout-oncall"
    assert body["status"] == "firing"
    [alert] = body["alerts"]
    assert alert["labels"]["alertname"] == STALL_ALERT
    assert alert["annotations"]["runbook_url"] == f"docs/runbooks/{STALL_ALERT}.md"
    assert "No last-success series exists" in alert["annotations"]["description"]
    print(
        f"\nwebhook received the page {time.monotonic() - deleted:.1f}s after the group was "
        f"deleted (lookback {LOOKBACK_SECONDS}s, for {FOR_SECONDS}s); "
        f"test body {time.monotonic() - started:.1f}s"
    )
