"""`rollout stack status --json` over a stack.json, without starting the stack: a process that
runs, one that has exited, and no stack at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from deployments.stack import Component, StackState, start_time
from rollout_cli.main import app


def write_state(directory: Path, components: list[Component]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = StackState(str(directory), components, {"REDIS_URL": "redis://127.0.0.1:1/0"}, {})
    (directory / "stack.json").write_text(state.to_json(), encoding="utf-8")


def test_stack_status_json_reports_each_process_and_exits_1_when_one_is_down(
    tmp_path: Path,
) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        try:
            write_state(
                tmp_path,
                [
                    Component("redis", sleeper.pid, start_time(sleeper.pid), "redis://x", "r.log"),
                    Component("worker", exited.pid, 1, "http://y", "w.log", "SIGINT"),
                ],
            )
            result = CliRunner().invoke(app, ["stack", "status", "--json", "--dir", str(tmp_path)])
        finally:
            sleeper.kill()

    assert result.exit_code == 1
    reported = json.loads(result.stdout)
    assert reported["up"] is True and reported["all_running"] is False
    assert [(c["name"], c["running"]) for c in reported["components"]] == [
        ("redis", True),
        ("worker", False),
    ]
    assert reported["env"] == {"REDIS_URL": "redis://127.0.0.1:1/0"}


def test_stack_status_json_says_no_stack_is_up_with_exit_0(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stack", "status", "--json", "--dir", str(tmp_path)])

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "directory": str(tmp_path.resolve()),
        "up": False,
        "all_running": False,
        "components": [],
    }
