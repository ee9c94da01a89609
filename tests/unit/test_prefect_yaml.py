"""prefect.yaml: Prefect ignores misspelled keys silently, so every key is checked here against
Prefect's own deploy models and against the exact set this project means to write."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"
CONTROLLER_KEYS = {
    "name",
    "entrypoint",
    "description",
    "tags",
    "work_pool",
    "parameters",
    "schedules",
    "concurrency_limit",
}
OVERRIDE_KEYS = {"name", "entrypoint", "description", "tags", "work_pool"}
ABORT_KEYS = {"name", "entrypoint", "description", "tags", "work_pool", "parameters", "triggers"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def deployment(document: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [d for d in document["deployments"] if d["name"] == name]
    assert isinstance(found, dict)
    return found


def fields_of(model: Any) -> set[str]:
    """The keys a Prefect deploy model reads (by alias where it has one)."""
    return {info.alias or name for name, info in model.model_fields.items()}


def test_every_key_is_one_prefect_reads(document: dict[str, Any]) -> None:
    from prefect.cli.deploy._models import (
        ConcurrencyLimitSpec,
        DeploymentConfig,
        PrefectYamlModel,
        RawScheduleConfig,
        WorkPoolConfig,
    )

    PrefectYamlModel.model_validate(document)
    assert set(document) <= fields_of(PrefectYamlModel)
    for item in document["deployments"]:
        assert set(item) <= fields_of(DeploymentConfig), item["name"]
        assert set(item.get("work_pool") or {}) <= fields_of(WorkPoolConfig)
        assert set(item.get("concurrency_limit") or {}) <= fields_of(ConcurrencyLimitSpec)
        for schedule in item.get("schedules") or []:
            RawScheduleConfig.model_validate(schedule)  # extra="forbid": a typo raises


def test_the_deployments_have_exactly_the_intended_keys(document: dict[str, Any]) -> None:
    names = [d["name"] for d in document["deployments"]]
    assert names == ["every-10-minutes", "manual", "abort"]
    assert set(deployment(document, "every-10-minutes")) == CONTROLLER_KEYS
    assert set(deployment(document, "manual")) == OVERRIDE_KEYS
    assert set(deployment(document, "abort")) == ABORT_KEYS


def test_the_controller_runs_every_600_seconds_on_a_fixed_slug_and_never_forces_active(
    document: dict[str, Any],
) -> None:
    [schedule] = deployment(document, "every-10-minutes")["schedules"]
    assert schedule == {"interval": 600, "slug": "every-10-minutes"}  # no `active: true`


def test_the_controller_cancels_an_overlapping_run_and_starts_as_a_dry_run(
    document: dict[str, Any],
) -> None:
    controller = deployment(document, "every-10-minutes")
    assert controller["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert controller["parameters"]["dry_run"] is True
    assert controller["work_pool"] == {"name": "rollout-pool"}


def test_the_override_has_no_schedule(document: dict[str, Any]) -> None:
    override = deployment(document, "manual")
    assert "schedules" not in override and "schedule" not in override
    assert override["work_pool"] == {"name": "rollout-pool"}


def test_the_abort_is_triggered_per_feature_by_firing_alerts_and_no_schedule_limit_cancels_it(
    document: dict[str, Any],
) -> None:
    from prefect.events import DeploymentEventTrigger

    abort = deployment(document, "abort")
    assert "concurrency_limit" not in abort and "schedules" not in abort
    assert abort["parameters"]["dry_run"] is True  # like the schedule; the stack runs it live
    [raw] = abort["triggers"]
    trigger = DeploymentEventTrigger(**raw)  # every key is one Prefect reads
    assert trigger.expect == {"rollout.alert.firing"}
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match.root == {"prefect.resource.id": "rollout.feature.*"}
    assert trigger.threshold == 1 and trigger.enabled
    assert trigger.parameters == {
        "features": ["{{ event.payload.feature }}"],
        "alert": "{{ event.payload.alert }}",
    }


def test_the_abort_trigger_reads_the_fields_the_bridge_sends() -> None:
    from rollout_core.abort import alert_event, parse_alert, parse_webhook

    body = {
        "version": "4",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "GmailErrorRateFast", "rollout_feature": "google"},
                "startsAt": "2026-11-30T06:00:00Z",
                "fingerprint": "ab",
            }
        ],
    }
    event = alert_event(parse_webhook(body)[0])
    assert event["payload"]["feature"] == "google"
    assert parse_alert(event["payload"]["alert"]).feature == "google"


@pytest.mark.parametrize(
    ("name", "flow_name"),
    [
        ("every-10-minutes", "rollout-controller"),
        ("manual", "rollout-override"),
        ("abort", "rollout-controller"),
    ],
)
def test_each_entrypoint_imports_a_flow_with_the_expected_name_and_parameters(
    document: dict[str, Any], name: str, flow_name: str
) -> None:
    item = deployment(document, name)
    path, _, function = item["entrypoint"].partition(":")
    assert (PREFECT_YAML.parent / path).is_file()
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    assert flow.name == flow_name
    assert set(item.get("parameters", {})) <= set(inspect.signature(flow.fn).parameters)


def test_deploy_serve_and_the_kill_switch_name_the_deployments_and_the_slug_of_prefect_yaml(
    document: dict[str, Any],
) -> None:
    from deployments.alert_bridge import ABORT_DEPLOYMENT
    from deployments.deploy import deployment_names
    from deployments.kill_switch import CONTROLLER_DEPLOYMENT, SCHEDULE_SLUG
    from deployments.serve import OVERRIDE_DEPLOYMENT

    [schedule] = deployment(document, "every-10-minutes")["schedules"]
    assert schedule["slug"] == SCHEDULE_SLUG
    assert deployment_names(PREFECT_YAML.parent) == [
        CONTROLLER_DEPLOYMENT,
        OVERRIDE_DEPLOYMENT,
        ABORT_DEPLOYMENT,
    ]
