"""`rollout stack up|inject|status|down` as an operator runs them: every server answers, a
deployed controller run completes through the worker, injected errors reach Prometheus, and
`down` leaves no process running and no port listening."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from deployments.stack import STACK_DIR_ENV, StackState, alive, worker_online
from tests.integration.conftest import seed_flag
from tests.integration.traffic import poll

pytestmark = pytest.mark.e2e

ROLLOUT = str(Path(sys.executable).with_name("rollout"))
CONTROLLER = "rollout-controller/every-10-minutes"


def rollout(*args: str, stack_dir: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`rollout stack <args>` in a subprocess, the stack directory from ROLLOUT_STACK_DIR."""
    env = {**os.environ, STACK_DIR_ENV: str(stack_dir)}
    return subprocess.run(
        [ROLLOUT, "stack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def prometheus_value(prometheus_url: str, query: str) -> float:
    """The query's single value; NaN while Prometheus has no answer yet."""
    encoded = urllib.parse.urlencode({"query": query})
    result = get_json(f"{prometheus_url}/api/v1/query?{encoded}")["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def port_open(url: str) -> bool:
    port = urllib.parse.urlsplit(url).port
    assert port is not None, url
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def check_every_component_answers(state: StackState) -> None:
    env, urls = state.env, state.urls
    api = env["PREFECT_API_URL"]
    assert get_json(f"{api}/health") is True
    with urllib.request.urlopen(urls["Prefect UI"], timeout=5) as page:
        assert page.status == 200

    groups = get_json(f"{env['PROMETHEUS_BASE_URL']}/api/v1/rules")["data"]["groups"]
    alerts = {
        rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"
    }
    assert "gmail-slo" in {group["name"] for group in groups}
    assert "GmailErrorRateHigh" in alerts, alerts
    assert {g["interval"] for g in groups} == {5}
    targets = poll(
        lambda: get_json(f"{env['PROMETHEUS_BASE_URL']}/api/v1/targets")["data"]["activeTargets"],
        lambda active: (
            sorted((t["labels"]["job"], t["health"]) for t in active)
            == [("pushgateway", "up"), ("sample", "up")]
        ),
        timeout=15,
        what="both scrape targets up",
    )
    assert {t["scrapeInterval"] for t in targets} == {"5s"}
    alertmanagers = get_json(f"{env['PROMETHEUS_BASE_URL']}/api/v1/alertmanagers")["data"]
    assert [a["url"] for a in alertmanagers["activeAlertmanagers"]] == [
        f"{urls['Alertmanager']}/api/v2/alerts"
    ]

    with urllib.request.urlopen(f"{env['PUSHGATEWAY_URL']}/-/ready", timeout=5) as ready:
        assert ready.status == 200
    assert get_json(f"{urls['Alertmanager']}/api/v2/status")["cluster"]["status"] == "disabled"
    assert redis.Redis.from_url(env["REDIS_URL"]).ping() is True
    with urllib.request.urlopen(urls["Sample service"], timeout=5) as metrics:
        text = metrics.read().decode()
    region = 'provider="google",region="eu-west"'  # the sample service labels regions
    assert f'action_exec_total{{{region},action="gmail.send"}}' in text
    assert f'oauth_events_total{{{region},event="refresh_failed"}}' in text

    deployments = post_json(f"{api}/deployments/filter", {})
    assert sorted(d["name"] for d in deployments) == ["abort", "every-10-minutes", "manual"]
    assert state.deployments == ["rollout-controller/abort", CONTROLLER, "rollout-override/manual"]
    [abort] = [d for d in deployments if d["name"] == "abort"]
    assert abort["parameters"]["dry_run"] is False  # the playground's abort runs live
    [controller] = [d for d in deployments if d["name"] == "every-10-minutes"]
    assert controller["parameters"]["dry_run"] is True  # prefect.yaml's default
    assert worker_online(api)
    # Alertmanager calls the bridge with the stack's token; the bridge refuses any other
    with urllib.request.urlopen(f"{urls['Alert bridge']}/-/healthy", timeout=5) as healthy:
        assert healthy.status == 200
    config = get_json(f"{urls['Alertmanager']}/api/v2/status")["config"]["original"]
    assert f"{urls['Alert bridge']}/alerts" in config


def run_controller(api: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A manual run of the controller deployment, picked up by the stack's worker; its final
    flow run (as `prefect deployment run ... --watch`)."""
    deployment = get_json(f"{api}/deployments/name/{CONTROLLER}")
    created = post_json(
        f"{api}/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters}
    )
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    run: dict[str, Any] = poll(
        lambda: get_json(f"{api}/flow_runs/{created['id']}"),
        lambda flow_run: flow_run["state"]["type"] in final,
        timeout=120,
        what="the controller run to finish",
    )
    return run


def test_stack_up_serves_the_product_and_down_leaves_nothing_running(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    began = time.perf_counter()
    started = rollout("up", "--random-ports", stack_dir=stack_dir)
    up_seconds = time.perf_counter() - began
    try:
        assert started.returncode == 0, started.stderr
        state = StackState.from_json((stack_dir / "stack.json").read_text())
        assert "export PROMETHEUS_BASE_URL=" in started.stdout
        assert "rollout-controller/abort runs LIVE" in started.stderr
        assert all(c.is_alive() for c in state.components)
        assert {c.name for c in state.components} == {
            "redis",
            "pushgateway",
            "alertmanager",
            "sample-service",
            "prometheus",
            "prefect-server",
            "worker",
            "alert-bridge",
        }

        again = rollout("up", stack_dir=stack_dir)
        assert (again.returncode, "already up" in again.stdout) == (0, True), again.stderr
        assert rollout("status", stack_dir=stack_dir).returncode == 0
        status = rollout("status", "--json", stack_dir=stack_dir)
        assert status.returncode == 0, status.stderr
        reported = json.loads(status.stdout)
        assert (reported["up"], reported["all_running"]) == (True, True)
        assert {(c["name"], c["pid"], c["running"]) for c in reported["components"]} == {
            (c.name, c.pid, True) for c in state.components
        }
        assert reported["env"] == state.env and reported["urls"] == state.urls

        check_every_component_answers(state)

        env = state.env
        flags = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        seed_flag(flags, "google", 0)
        poll(  # rollouts.yaml wants 200 sends in its 5m window before it judges
            lambda: prometheus_value(
                env["PROMETHEUS_BASE_URL"],
                'sum(increase(action_exec_total{provider="google",action="gmail.send"}[5m]))',
            ),
            lambda sends: sends > 200,
            timeout=30,
            what="200 sends in Prometheus",
        )
        run_began = time.perf_counter()
        run = run_controller(env["PREFECT_API_URL"], {"dry_run": False})
        run_seconds = time.perf_counter() - run_began
        assert run["state"]["type"] == "COMPLETED", run["state"]["message"]
        assert flags.get("flags:google:rollout_percent") == "10"
        # the decision line reaches the run's logs in the UI (the worker's env must not mute it)
        logs = poll(
            lambda: post_json(
                f"{env['PREFECT_API_URL']}/logs/filter",
                {"logs": {"flow_run_id": {"any_": [run["id"]]}}},
            ),
            lambda found: any("google: promote 0% -> 10%" in log["message"] for log in found),
            timeout=15,
        )
        assert logs

        refused = rollout("inject", "--error-rate", "1.5", stack_dir=stack_dir)
        assert refused.returncode == 2 and "--error-rate is 1.5; expected 0..1" in refused.stderr
        # a closed loop: only the 10% of requests on the feature's path break, ~5% overall
        injected = rollout("inject", "--error-rate", "0.5", "--latency", "0.8", stack_dir=stack_dir)
        assert injected.returncode == 0, injected.stderr
        inject_began = time.perf_counter()
        poll(
            lambda: prometheus_value(
                env["PROMETHEUS_BASE_URL"],
                'sum(rate(action_error_total{provider="google"}[15s]))'
                ' / sum(rate(action_exec_total{provider="google"}[15s]))',
            ),
            lambda ratio: ratio > 0.03,
            timeout=40,
            what="the injected fault on the rolled-out 10% in Prometheus",
        )
        inject_seconds = time.perf_counter() - inject_began
    finally:
        began = time.perf_counter()
        stopped = rollout("down", stack_dir=stack_dir)
        down_seconds = time.perf_counter() - began

    assert stopped.returncode == 0, stopped.stderr
    assert not (stack_dir / "stack.json").exists()
    assert [c.name for c in state.components if alive(c.pid, c.started)] == []
    ports = {c.url for c in state.components if c.name != "worker"}
    assert [url for url in ports if port_open(url)] == []
    assert "No stack is up" in rollout("down", stack_dir=stack_dir).stdout
    gone = rollout("status", "--json", stack_dir=stack_dir)
    assert (gone.returncode, json.loads(gone.stdout)["up"]) == (0, False)
    print(
        f"\nrollout stack up: {up_seconds:.1f} s, controller run through the worker: "
        f"{run_seconds:.1f} s, injected errors visible in Prometheus: {inject_seconds:.1f} s, "
        f"rollout stack down: {down_seconds:.1f} s"
    )
