"""The Prefect-side commands refuse bad input before touching Prefect, and the flag commands
never load Prefect at all (they must stay fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from deployments.servers import free_port
from rollout_cli.main import app

REPO = Path(__file__).resolve().parents[2]


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_notify_refuses_a_webhook_that_is_not_http_without_showing_its_secret_path() -> None:
    result = rollout("notify", "--webhook", "ftp://hooks.example.com/T0/s3cret")
    assert result.exit_code == 2
    assert "not an http(s) URL" in result.output and "s3cret" not in result.output


def test_deploy_refuses_a_directory_without_prefect_yaml(tmp_path: Path) -> None:
    result = rollout("deploy", "--project-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "has no prefect.yaml" in result.output and str(tmp_path) in result.output


def test_serve_refuses_a_missing_config_before_serving(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = rollout("serve", "--config", str(missing))
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def test_run_refuses_a_config_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [unclosed\n", encoding="utf-8")
    result = rollout("run", "--config", str(bad))
    assert result.exit_code == 2
    assert "bad.yaml" in result.output


def test_run_refuses_a_percent_typed_for_a_quantile_in_one_line_before_any_flow_run(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "rollouts.yaml"
    shipped = (REPO / "rollouts.yaml").read_text(encoding="utf-8")
    assert "histogram_quantile(0.95," in shipped
    bad.write_text(
        shipped.replace("histogram_quantile(0.95,", "histogram_quantile(95,", 1), "utf-8"
    )
    result = rollout("run", "--config", str(bad))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"error: {bad}:" in result.output
    assert "histogram_quantile(95, ...) asks for the 9500th percentile; a quantile is between " in (
        result.output
    )


def test_the_cli_and_its_flag_commands_do_not_import_prefect() -> None:
    probe = (
        "import sys, rollout_cli.main, rollout_cli.formatting, rollout_core.flags, "
        "rollout_core.audit, rollout_core.config, rollout_core.redis_connection; "
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == "[]"


def rollout_process(*args: str, api_url: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`rollout` in its own process: Prefect reads PREFECT_API_URL when it is imported."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    argv = [sys.executable, "-m", "rollout_cli.main", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_deploy_refuses_to_run_without_a_prefect_api(tmp_path: Path) -> None:
    # without one, Prefect would start a throwaway server and "deploy" into it
    result = rollout_process("deploy", "--project-dir", str(REPO), api_url="", home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "PREFECT_API_URL is not set" in result.stderr


def test_notify_against_an_api_that_is_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/api"
    result = rollout_process(
        "notify", "--webhook", "http://127.0.0.1:9/hook", api_url=down, home=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the Prefect API at {down} did not answer ([Errno 111] Connection refused); "
        "is it running?"
    ]


def test_run_refuses_a_bad_rollout_dry_run_before_any_flow_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROLLOUT_DRY_RUN", "maybe")
    result = rollout("run", "--config", str(REPO / "rollouts.yaml"))
    assert result.exit_code == 2
    assert "ROLLOUT_DRY_RUN is 'maybe'; expected true or false" in result.output


def test_run_json_keeps_the_first_line_and_the_warnings_apart() -> None:
    import json

    from rollout_cli.flow_commands import run_json
    from rollout_core.controller import FeatureOutcome, OutcomeStatus

    failed = FeatureOutcome("google", OutcomeStatus.PROM_UNREACHABLE, error="refused")
    message = "live: 1 feature(s): 1 failed\ngoogle: prom_unreachable (refused)\nwarning: x: y"

    document = json.loads(run_json("Failed", True, message, [failed], False))

    assert document["message"] == "live: 1 feature(s): 1 failed"
    assert document["warnings"] == ["x: y"]
    assert document["features"][0] == {
        "feature": "google",
        "status": "prom_unreachable",
        "action": "failed",
        "from_percent": None,
        "to_percent": None,
        "percent": None,
        "applied": False,
        "dry_run": False,
        "guard": None,
        "reason": "refused",
        "slos": [],
        "audit_id": None,
    }


def test_run_json_of_a_dry_run_says_dry_run_for_the_run_and_for_a_feature_that_failed() -> None:
    import json

    from rollout_cli.flow_commands import run_json
    from rollout_core.controller import FeatureOutcome, OutcomeStatus

    failed = FeatureOutcome("google", OutcomeStatus.PROM_UNREACHABLE, error="refused")

    document = json.loads(run_json("Failed", True, "dry run: 1 failed", [failed], True))

    assert document["dry_run"] is True and document["features"][0]["dry_run"] is True
