"""The alert rules in a real Prometheus fed by a real Pushgateway, and on to a real Alertmanager:
the stall alert's life cycle, RolloutControllerFailing across a Prometheus restart, and the
minimum-traffic guard of the Gmail error alerts.

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
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    delete_from_gateway,
    push_to_gateway,
)

from deployments.servers import RunningServer, start_prometheus
from rollout_core.model import Action
from rollout_core.telemetry import RUNS_KEY, PushgatewayTelemetry
from tests.integration.traffic import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "observability" / "prometheus-alerts.yml"
ALERTMANAGER_FILE = REPO_ROOT / "observability" / "alertmanager.yml"
STALL_ALERT = "RolloutControllerStalled"
FAILING_ALERT = "RolloutControllerFailing"
GMAIL_ALERTS = ("GmailErrorRateHigh", "GmailErrorBudgetFastBurn")
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


def alert_states(prometheus: RunningServer, name: str) -> list[dict[str, Any]]:
    """The pending or firing alerts of the rule `name`, from /api/v1/alerts."""
    alerts = get_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == name]


def stall_alert_state(prometheus: RunningServer) -> tuple[str, dict[str, Any] | None]:
    """("inactive" | "pending" | "firing", the alert) from /api/v1/alerts."""
    for alert in alert_states(prometheus, STALL_ALERT):
        return alert["state"], alert
    return "inactive", None


def rule_evaluated_inactive_since(prometheus: RunningServer, name: str, since: float) -> bool:
    """True when the alert rule `name` was evaluated after `since` (epoch seconds) and is
    inactive."""
    groups = get_json(f"{prometheus.url}/api/v1/rules?type=alert")["data"]["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        if rule["name"] == name:
            evaluated = parse_rfc3339(rule["lastEvaluation"])
            return rule["state"] == "inactive" and evaluated > since
    raise AssertionError(f"{name} is not loaded in {prometheus.url}")


def stall_rule_evaluated_inactive_since(prometheus: RunningServer, since: float) -> bool:
    return rule_evaluated_inactive_since(prometheus, STALL_ALERT, since)


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of Go's RFC 3339 time with nanoseconds, which Python parses only to µs."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, f"not an RFC 3339 time: {text!r}"
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float(f"0.{fraction or 0}")


def instant(prometheus: RunningServer, query: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    return list(get_json(url)["data"]["result"])


def has_series(prometheus: RunningServer, query: str) -> bool:
    return bool(instant(prometheus, query))


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


def stays_inactive(prometheus: RunningServer, name: str, evaluations: int = 3) -> None:
    """Wait for `evaluations` evaluations of the rule `name` (1 s apart), failing if it is ever
    pending or firing meanwhile."""
    for _ in range(evaluations):
        since = time.time()

        def evaluated_inactive(since: float = since) -> bool:
            assert alert_states(prometheus, name) == [], f"{name} is active"
            return rule_evaluated_inactive_since(prometheus, name, since)

        poll(evaluated_inactive, bool, 15, f"{name} evaluated inactive")


def test_a_flat_error_counter_fires_nothing_across_a_prometheus_restart_but_a_new_failure_does(
    pushgateway: RunningServer, redis_url: str, short_rules: Path, tmp_path: Path
) -> None:
    """Issue 10.10: a Pushgateway holding runs_total{status="error"} 3 from earlier runs, a
    fresh Prometheus, then the same Prometheus restarted on its storage: no alert. Then one
    more failed run: the alert fires."""
    redis_client = redis.Redis.from_url(redis_url)
    redis_client.hset(RUNS_KEY, mapping={"ok": 40, "error": 3})
    telemetry = PushgatewayTelemetry(pushgateway.url, redis_client=redis_client)
    pushed = telemetry.record_run({"google": Action.HOLD}, {"google": 10}, "ok", datetime.now(UTC))
    assert pushed == "pushed"
    data_dir = tmp_path / "prometheus-restarted"
    targets = {"pushgateway": [pushgateway.host_port]}
    errors = 'rollout_controller_runs_total{job="rollout_controller",status="error"}'
    prometheus = start_prometheus(data_dir, scrape_targets=targets, rule_files=[short_rules])
    try:
        poll(lambda: has_series(prometheus, errors), bool, 15, "the error counter in Prometheus")
        stays_inactive(prometheus, FAILING_ALERT)
        port = prometheus.port
        prometheus.stop()
        prometheus = start_prometheus(
            data_dir, scrape_targets=targets, rule_files=[short_rules], port=port
        )
        poll(lambda: has_series(prometheus, errors), bool, 15, "the error counter after restart")
        stays_inactive(prometheus, FAILING_ALERT, evaluations=5)
        [sample] = instant(prometheus, f"{errors}[1h]")
        assert {value for _, value in sample["values"]} == {"3"}  # flat across the restart

        telemetry.record_run({}, {}, "error", datetime.now(UTC))

        def failing() -> list[dict[str, Any]]:
            return alert_states(prometheus, FAILING_ALERT)

        [alert] = poll(failing, lambda alerts: alerts != [], 15, f"{FAILING_ALERT} firing")
    finally:
        prometheus.stop()
    assert alert["state"] == "firing"  # no `for`: a failure tickets at once
    assert alert["labels"]["status"] == "error"
    assert alert["annotations"]["description"].startswith("1 controller run(s) ended")


class GmailTraffic:
    """Gmail send counters pushed to the Pushgateway as the sample service would expose them."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry()
        labels = ["provider", "action"]
        self.calls = Counter("action_exec", "", labels, registry=self.registry)
        self.errors = Counter("action_error", "", labels, registry=self.registry)

    def send(self, calls: int, errors: int) -> None:
        self.calls.labels("google", "gmail.send").inc(calls)
        self.errors.labels("google", "gmail.send").inc(errors)
        push_to_gateway(self.gateway, job="sample", registry=self.registry)


def test_low_traffic_errors_fire_no_gmail_alert_and_enough_traffic_does(
    prometheus_factory: Callable[..., RunningServer],
    pushgateway: RunningServer,
    short_rules: Path,
) -> None:
    """Issue 10.11: half the calls failing at a few calls a second stays silent while the ratio
    is 50x the limit; the same ratio on 200 calls in the 5m window fires both alerts."""
    traffic = GmailTraffic(pushgateway.host_port)
    traffic.send(2, 1)
    prometheus = prometheus_factory(
        scrape_targets={"pushgateway": [pushgateway.host_port]}, rule_files=[short_rules]
    )
    over_the_limits = (
        "provider_action:action_errors:ratio_rate5m > 0.144 and "
        "provider_action:action_errors:ratio_rate1h > 0.144"
    )

    def ratio_over_the_limits() -> bool:
        traffic.send(2, 1)
        return has_series(prometheus, over_the_limits)

    poll(ratio_over_the_limits, bool, 20, "a 50% error ratio in Prometheus")
    for name in GMAIL_ALERTS:
        traffic.send(2, 1)
        stays_inactive(prometheus, name, evaluations=3)
    [calls] = instant(prometheus, "provider_action:action_exec:increase5m")
    assert float(calls["value"][1]) < 200

    def both_firing() -> bool:
        traffic.send(100, 50)
        states = [alert_states(prometheus, name) for name in GMAIL_ALERTS]
        return all(alerts and alerts[0]["state"] == "firing" for alerts in states)

    poll(both_firing, bool, 30, f"{' and '.join(GMAIL_ALERTS)} firing")
    [calls] = instant(prometheus, "provider_action:action_exec:increase5m")
    assert float(calls["value"][1]) >= 200
