"""`rollout stack up` over a stack.json that is already there, without starting servers: the
topology it records, another topology refused naming both, and the environment the operator's
shell gets (env.sh) being the one the workers get."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.stack import Component, StackState, read_state, stack_env, start_time, up
from rollout_cli.main import app
from rollout_core.bootstrap import Settings

SENTINELS = "127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381"


@pytest.fixture
def running() -> Iterator[int]:
    """A live process standing for every component of the stack."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        try:
            yield sleeper.pid
        finally:
            sleeper.kill()


def env_of(topology: str, directory: Path) -> dict[str, str]:
    return stack_env(
        topology,
        directory,
        prefect_api_url="http://127.0.0.1:4200/api",
        redis_url=f"redis+sentinel://{SENTINELS}/rollout/0"
        if topology == "ha"
        else "redis://127.0.0.1:6379/0",
        prometheus_url="http://127.0.0.1:9090",
        pushgateway_url="http://127.0.0.1:9091",
        bridge_token="t",
        sentinel_hosts=SENTINELS,
    )


def write_state(directory: Path, pid: int, topology: str, recorded: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    component = Component("redis", pid, start_time(pid), "redis://127.0.0.1:6379/0", "r.log")
    urls = {"Redis": "redis://127.0.0.1:6379/0"}
    state = StackState(str(directory), [component], env_of(topology, directory), urls)
    data = json.loads(state.to_json())
    data["topology"] = topology
    if not recorded:  # a stack.json written before the topology was recorded
        del data["topology"]
    (directory / "stack.json").write_text(json.dumps(data), encoding="utf-8")


def test_asking_for_the_ha_topology_over_a_running_single_stack_is_refused_naming_both(
    tmp_path: Path, running: int
) -> None:
    write_state(tmp_path, running, "single")
    before = (tmp_path / "stack.json").read_text()
    with pytest.raises(RuntimeError) as refused:
        up(tmp_path, usual_ports=False, ui=False, topology="ha")
    message = str(refused.value)
    assert "is a --topology single stack (up, REDIS_URL=redis://127.0.0.1:6379/0)" in message
    assert "you asked for --topology ha" in message
    assert f"`rollout stack down --dir {tmp_path}` then `rollout stack up --topology ha`" in message
    assert (tmp_path / "stack.json").read_text() == before  # nothing stopped or started


def test_asking_for_the_single_topology_over_a_running_ha_stack_is_refused_too(
    tmp_path: Path, running: int
) -> None:
    write_state(tmp_path, running, "ha")
    with pytest.raises(RuntimeError, match=r"is a --topology ha stack .*--topology single"):
        up(tmp_path, usual_ports=False, ui=False, topology="single")


def test_up_without_a_topology_reports_the_running_stack_whatever_its_topology(
    tmp_path: Path, running: int
) -> None:
    write_state(tmp_path, running, "ha")
    result = up(tmp_path, usual_ports=False, ui=False)
    assert result.already_up and result.state.topology == "ha"


def test_a_stack_file_from_before_the_topology_was_recorded_reads_it_from_the_sentinels(
    tmp_path: Path, running: int
) -> None:
    write_state(tmp_path / "ha", running, "ha", recorded=False)
    write_state(tmp_path / "single", running, "single", recorded=False)
    ha, single = read_state(tmp_path / "ha"), read_state(tmp_path / "single")
    assert ha is not None and ha.topology == "ha"
    assert single is not None and single.topology == "single"


def test_the_cli_refuses_another_topology_with_exit_1_and_says_which_is_up(
    tmp_path: Path, running: int
) -> None:
    write_state(tmp_path, running, "single")
    result = CliRunner().invoke(
        app, ["stack", "up", "--topology", "ha", "--dir", str(tmp_path), "--random-ports"]
    )
    assert result.exit_code == 1
    assert "is a --topology single stack" in result.output
    already = CliRunner().invoke(app, ["stack", "up", "--dir", str(tmp_path)])
    assert already.exit_code == 0
    assert "The single stack in" in already.output and "is already up" in already.output


def test_the_ha_stacks_shell_gets_the_write_memory_and_heartbeats_its_workers_get(
    tmp_path: Path,
) -> None:
    shell = env_of("ha", tmp_path)  # what env.sh exports, and the workers' environment
    settings = Settings.from_env(shell)
    assert settings.write_memory is True  # `rollout run --live` loads and saves the memory
    assert shell["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    assert shell["REDIS_SENTINELS"] == SENTINELS and shell["REDIS_SENTINEL_SERVICE"] == "rollout"
    single = Settings.from_env(env_of("single", tmp_path))
    assert single.write_memory is False
