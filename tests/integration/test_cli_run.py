"""`rollout run`: one pass of the real flow from the command line, against real Redis and
Prometheus on the session's Prefect test server. Exit 0 for any completed run (holds too),
1 for a Failed run, 2 for bad input refused before any run exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner, Result

from rollout_cli.main import app
from tests.integration.conftest import audit_entries, flag_keys, seed_flag, write_config

pytestmark = pytest.mark.integration


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_run_live_promotes_prints_the_decision_then_holds_in_the_dwell(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"clirun": None})
    seed_flag(flags, "clirun", 0)

    first = rollout("run", "--live", "-f", "clirun", "--config", str(config))

    assert first.exit_code == 0, first.output
    assert "clirun" in first.output and "promote" in first.output
    assert "0%" in first.output and "10%" in first.output
    assert flag_keys(flags, "clirun")["rollout_percent"] == "10"

    second = rollout("run", "--live", "-f", "clirun", "--config", str(config))

    assert second.exit_code == 0, second.output  # a hold is not a failure
    assert "hold" in second.output and "dwell" in second.output
    assert flag_keys(flags, "clirun")["rollout_percent"] == "10"


def test_run_without_live_only_recommends(flags: redis.Redis, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"clirun": None})
    seed_flag(flags, "clirun", 0)

    result = rollout("run", "-f", "clirun", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert "recommend promote" in result.output and "dry run" in result.output
    assert flag_keys(flags, "clirun")["rollout_percent"] == "0"
    assert [e["dry_run"] for e in audit_entries(flags, "clirun")] == ["true"]


def test_run_exits_1_when_prometheus_is_unreachable_and_writes_nothing(
    flags: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.servers import free_port

    config = write_config(tmp_path, {"clidown": None})
    seed_flag(flags, "clidown", 0)
    monkeypatch.setenv("PROMETHEUS_BASE_URL", f"http://127.0.0.1:{free_port()}")

    result = rollout("run", "--live", "-f", "clidown", "--config", str(config))

    assert result.exit_code == 1, result.output
    assert "prom_unreachable" in result.output and "Failed" in result.output
    assert flag_keys(flags, "clidown")["rollout_percent"] == "0"
    assert audit_entries(flags, "clidown") == []


def test_run_json_of_a_dry_run_reports_dry_run_even_for_a_feature_that_failed(
    flags: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from deployments.servers import free_port

    config = write_config(tmp_path, {"clidown": None})
    seed_flag(flags, "clidown", 0)
    monkeypatch.setenv("PROMETHEUS_BASE_URL", f"http://127.0.0.1:{free_port()}")

    result = rollout("run", "--json", "-f", "clidown", "--config", str(config))

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and document["message"].startswith("dry run")
    assert [f["dry_run"] for f in document["features"]] == [True]


def test_run_refuses_an_unknown_feature_before_any_flow_run(
    flags: redis.Redis, tmp_path: Path
) -> None:
    config = write_config(tmp_path, {"clirun": None})
    seed_flag(flags, "clirun", 0)

    result = rollout("run", "--live", "-f", "nosuch", "--config", str(config))

    assert result.exit_code == 2, result.output
    assert "nosuch" in result.output
    assert flag_keys(flags, "clirun")["rollout_percent"] == "0"


def test_run_json_prints_the_state_and_each_features_numbers(
    flags: redis.Redis, tmp_path: Path
) -> None:
    import json

    config = write_config(tmp_path, {"clirun": None})
    seed_flag(flags, "clirun", 0)

    result = rollout("run", "--live", "--json", "-f", "clirun", "--config", str(config))

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["state"], document["failed"]) == ("Completed", False)
    assert document["message"] == "live: 1 feature(s): 1 promote"
    [feature] = document["features"]
    assert feature["feature"] == "clirun" and feature["action"] == "promote"
    assert (feature["from_percent"], feature["to_percent"], feature["percent"]) == (0, 10, 10)
    assert feature["applied"] is True and feature["audit_id"]
    assert any("error_rate" in slo for slo in feature["slos"])
