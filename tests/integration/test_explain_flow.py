"""`rollout explain` on audit entries written by real controller flow runs (Prefect test
server, real Redis, a real Prometheus scraping the sample service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from typer.testing import CliRunner, Result

from deployments.sample_service import SampleService
from deployments.servers import RunningServer
from flows.controller import rollout_controller
from tests.integration.conftest import WINDOW, audit_entries, seed_flag, write_config
from tests.integration.test_controller_flow import wait_until_error_ratio_above

pytestmark = pytest.mark.integration


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app_(), list(args))


def app_() -> Any:
    from rollout_cli.main import app

    return app


def run(config: Path) -> Any:
    return rollout_controller(dry_run=False, config_path=str(config), return_state=True)


def with_slo(config: Path, slo: dict[str, Any], name: str) -> Path:
    """The same rollouts file with one more SLO in the gmail profile."""
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["profiles"]["gmail"]["slos"].append(slo)
    changed = config.with_name(name)
    changed.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return changed


def with_error_rate(config: Path, **changes: Any) -> Path:
    """The same rollouts file with the error_rate SLO of the gmail profile changed."""
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    for slo in document["profiles"]["gmail"]["slos"]:
        if slo["name"] == "error_rate":
            slo.update(changes)
    changed = config.with_name("rollouts-changed.yaml")
    changed.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return changed


def explain(entry_id: str, config: Path) -> dict[str, Any]:
    result = rollout("explain", entry_id, "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.output)
    return body


def test_a_flow_promotion_records_its_inputs_and_explain_names_a_changed_min_samples(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)
    assert run(config).is_completed()
    entry_id, entry = flags.xrevrange("rollout:audit", count=1)[0]
    assert entry["action"] == "promote"
    assert len(entry["inputs"].encode()) < 2048  # three SLOs, well under 2 KB

    same = explain(entry_id, config)
    assert same["reproduces"] is True, same
    assert same["recorded"]["action"] == same["replayed"]["action"] == "promote"
    assert same["differences"] == []

    stricter = with_error_rate(config, min_samples=10**9)
    changed = explain(entry_id, stricter)
    assert changed["reproduces"] is False
    assert changed["replayed"]["action"] == "hold"
    assert any("min_samples changed 200 -> 1000000000" in d for d in changed["differences"])

    verbose = rollout("audit", "google", "--verbose")
    assert verbose.exit_code == 0, verbose.output
    assert "error_rate" in verbose.output and "min_samples 200" in verbose.output


def test_a_flow_rollback_is_reproduced_and_a_raised_max_shows_the_threshold_that_changed(
    flags: redis.Redis,
    tmp_path: Path,
    gmail_traffic: SampleService,
    gmail_prometheus: RunningServer,
) -> None:
    config = write_config(tmp_path, {"spiky": None})
    seed_flag(flags, "spiky", 50)
    gmail_traffic.inject(["spiky"], error_rate=0.3)
    try:
        wait_until_error_ratio_above(gmail_prometheus.url, "spiky", 0.05)
        assert run(config).is_completed()
    finally:
        gmail_traffic.inject(["spiky"], error_rate=0.002)
    [entry] = audit_entries(flags, "spiky")
    assert entry["action"] == "rollback"
    entry_id = flags.xrevrange("rollout:audit", count=1)[0][0]

    same = explain(entry_id, config)
    assert same["reproduces"] is True, same
    assert same["recorded"]["verdicts"]["error_rate"] == "breach"

    lenient = with_error_rate(config, max=0.9)
    changed = explain(entry_id, lenient)
    assert changed["reproduces"] is False
    assert any("'error_rate': max changed" in d for d in changed["differences"]), changed
    assert any("verdict breach then" in d for d in changed["differences"]), changed


def test_explain_refuses_an_operator_entry_that_records_no_decision_inputs(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"google": None})
    seed_flag(flags, "google", 0)
    assert rollout("set", "google", "10", "--reason", "manual test").exit_code == 0
    entry_id = flags.xrevrange("rollout:audit", count=1)[0][0]

    result = rollout("explain", entry_id, "--config", str(config))

    assert result.exit_code == 2
    assert "records no decision inputs" in result.output


def test_a_flow_records_an_absent_count_series_as_absent_and_explain_judges_it_today(
    flags: redis.Redis, tmp_path: Path
) -> None:
    never_exported = {
        "name": "token_revocations",
        "kind": "count",
        "query": f"sum by (provider) (increase(token_revocations_total[{WINDOW}]))",
        "max": 3,
        "group_by": "provider",
        "absent_is_zero": True,
    }
    config = with_slo(write_config(tmp_path, {"google": None}), never_exported, "then.yaml")
    seed_flag(flags, "google", 0)
    assert run(config).is_completed()
    entry_id, entry = flags.xrevrange("rollout:audit", count=1)[0]
    assert entry["action"] == "promote" and "no series, read as 0" in entry["reason"]
    rows = {row[0]: row for row in json.loads(entry["inputs"])["s"]}

    assert rows["token_revocations"][2:4] == [None, None]  # what was read: no series
    assert explain(entry_id, config)["reproduces"] is True
    strict = {**never_exported, "absent_is_zero": False}
    today = explain(entry_id, with_slo(write_config(tmp_path, {"google": None}), strict, "t.yaml"))
    assert today["reproduces"] is False and today["replayed"]["action"] == "hold"
    assert any("its series was absent; read as 0" in d for d in today["differences"]), today
