"""The Grafana dashboard: its shape, and every panel's PromQL run against a real Prometheus.

Grafana's own variables ($__rate_interval, $__range, $feature) are substituted first, the way
Grafana would, so Prometheus parses exactly what a panel sends.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway

from deployments.servers import RunningServer
from rollout_core.config import load_config
from tests.integration.traffic import poll

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = REPO_ROOT / "observability" / "grafana" / "rollout-controller.json"
RULES_FILE = REPO_ROOT / "observability" / "prometheus-alerts.yml"
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$feature": ".*",  # the "All" value of the feature variable
}
# Panels over gauges the controller pushes: with one push they must return data.
PANELS_WITH_DATA_AFTER_ONE_PUSH = {
    "Rollout percent by feature",
    "Time since the last successful run",
    "Time since the last run and the last push",
}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, and the variables' queries."""
    queries = [
        (panel["title"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((f"${variable['name']}", variable["definition"]))
    return queries


def as_prometheus_sees_it(expr: str) -> str:
    """Grafana's variables substituted; `label_values(m, l)` becomes the PromQL it runs."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    label_values = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr)
    if label_values:
        expr = f"count by ({label_values[2]}) ({label_values[1]})"
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def query(prometheus: RunningServer, expr: str) -> dict[str, Any]:
    """The /api/v1/query answer, including a 400's body (bad PromQL)."""
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:
        return dict(json.load(error))


def push_controller_telemetry(gateway: str) -> None:
    """One successful run's metrics, as the controller pushes them."""
    registry = CollectorRegistry()
    Gauge("rollout_controller_percent", "", ["feature"], registry=registry).labels("google").set(10)
    changes = Counter("rollout_controller_changes", "", ["feature", "result"], registry=registry)
    changes.labels("google", "promote").inc()
    Counter("rollout_controller_runs", "", ["status"], registry=registry).labels("ok").inc()
    for name in ("last_success", "last_run"):
        gauge = Gauge(f"rollout_controller_{name}_timestamp_seconds", "", registry=registry)
        gauge.set_to_current_time()
    push_to_gateway(gateway, job="rollout_controller", registry=registry)


def test_the_dashboard_has_a_prometheus_datasource_variable_every_panel_uses() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert board["schemaVersion"] >= 36  # Grafana 9 and later import it as is
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_shows_the_rollout_decisions_runs_and_staleness() -> None:
    exprs = " ".join(expr for _, expr in panel_queries(dashboard()))
    assert "rollout_controller_percent" in exprs
    assert re.search(r"by \(feature, result\) \(increase\(rollout_controller_changes_total", exprs)
    assert re.search(r"by \(status\) \(increase\(rollout_controller_runs_total", exprs)
    assert "time() - max(rollout_controller_last_success_timestamp_seconds" in exprs


def test_the_slo_panels_run_the_queries_the_policy_reads() -> None:
    exprs = [expr for _, expr in panel_queries(dashboard())]
    for slo in load_config(REPO_ROOT / "rollouts.yaml").feature("google").slos:
        for policy_query in slo.queries:
            assert any(policy_query in expr for expr in exprs), (
                f"no panel runs the policy's {slo.name} query {policy_query}"
            )


def test_every_panel_query_parses_and_succeeds_in_a_real_prometheus(
    prometheus_factory: Callable[..., RunningServer], pushgateway: RunningServer
) -> None:
    push_controller_telemetry(pushgateway.host_port)
    prometheus = prometheus_factory(
        scrape_targets={"pushgateway": [pushgateway.host_port]}, rule_files=[RULES_FILE]
    )
    poll(
        lambda: bool(query(prometheus, "rollout_controller_percent")["data"]["result"]),
        bool,
        15,
        "the pushed telemetry in Prometheus",
    )
    queries = panel_queries(dashboard())
    answers = {
        (title, expr): query(prometheus, as_prometheus_sees_it(expr)) for title, expr in queries
    }

    failed = {key: answer for key, answer in answers.items() if answer["status"] != "success"}
    assert failed == {}
    empty = {
        title
        for (title, _), answer in answers.items()
        if title in PANELS_WITH_DATA_AFTER_ONE_PUSH and not answer["data"]["result"]
    }
    assert empty == set()
    assert len(queries) >= 15
    print(f"\n{len(queries)} dashboard queries answered status success")
