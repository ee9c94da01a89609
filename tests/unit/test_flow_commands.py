"""The Prefect-side commands refuse bad input before touching Prefect, and the flag commands
never load Prefect at all (they must stay fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from rollout_cli.main import app


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
