"""The installed `rollout` command end to end against a real redis-server (REDIS_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deployments.servers import RunningServer, start_redis

pytestmark = pytest.mark.integration

ROLLOUT = Path(sys.executable).with_name("rollout")
REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-Secret"


def rollout(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url, "USER": "ops"}
    return subprocess.run(
        [str(ROLLOUT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_redis(tmp_path / "secured", password=SECRET)
    yield server
    server.stop()


def test_an_operator_session_end_to_end(redis_url: str) -> None:
    config = str(REPO_ROOT / "rollouts.yaml")
    assert rollout(redis_url, "init", "google").returncode == 0
    changed = rollout(redis_url, "set", "google", "10", "--reason", "canary", "--by", "alice")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("google: 0% -> 10%")

    started = time.monotonic()
    status = rollout(redis_url, "status", "google", "--json", "--config", config)
    print(f"\n`rollout status google --json` took {time.monotonic() - started:.2f}s")
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert (row["percent"], row["paused"], row["internal_only"]) == (10, False, True)
    assert row["timing_from"] == config and 0 < row["dwell_remaining_seconds"] <= 900

    trail = rollout(redis_url, "audit", "google", "--json")
    entries = json.loads(trail.stdout)
    assert [(e["action"], e["by"]) for e in entries] == [("promote", "alice"), ("init", "ops")]


def test_a_password_protected_server_never_shows_its_password(
    secured_redis: RunningServer,
) -> None:
    url = secured_redis.url
    runs = [
        rollout(url, "init", "google"),
        rollout(url, "set", "google", "0.5", "--reason", "first actors"),
        rollout(url, "status", "--json"),
    ]
    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    assert json.loads(runs[2].stdout)[0]["percent"] == 0.5

    wrong = rollout(url.replace(SECRET, "not-it"), "status", "google")
    assert wrong.returncode == 1 and "check the password in REDIS_URL" in wrong.stderr

    secured_redis.kill()
    down = rollout(url, "status", "google")
    assert down.returncode == 1
    assert f"redis://:****@127.0.0.1:{secured_redis.port}/0" in down.stderr
    for run in [*runs, wrong, down]:
        assert SECRET not in run.stdout + run.stderr


def test_redis_down_exits_1_with_one_line(own_redis: RunningServer) -> None:
    own_redis.kill()
    down = rollout(own_redis.url, "set", "google", "10", "--reason", "canary")
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.count("\n") == 1
    assert down.stderr.startswith(f"error: Redis at redis://127.0.0.1:{own_redis.port}/0 failed")


def test_the_cli_never_imports_prefect_and_loads_redis_only_when_a_command_runs(
    redis_url: str,
) -> None:
    probe = """
import contextlib, sys
import rollout_cli.main
print(sorted({"redis", "pydantic", "prefect"} & set(sys.modules)))
with contextlib.suppress(SystemExit):
    rollout_cli.main.app(["status", "google", "--json"])
print(sorted({"redis", "prefect"} & set(sys.modules)))
"""
    env = {**os.environ, "REDIS_URL": redis_url}
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.strip().splitlines()
    assert (lines[0], lines[-1]) == ("[]", "['redis']")


def test_init_refuses_a_name_whose_environment_names_an_initialised_feature_has(
    redis_url: str,
) -> None:
    assert rollout(redis_url, "init", "gmail.send").returncode == 0

    clash = rollout(redis_url, "init", "gmail-send")

    assert clash.returncode == 2, clash.stderr
    assert "PROVIDER_GMAIL_SEND_ENABLED" in clash.stderr and "'gmail.send'" in clash.stderr
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.keys("flags:gmail-send:*") == []
    client.close()


def test_init_refuses_the_name_reserved_for_the_kill_switch_audit(redis_url: str) -> None:
    refused = rollout(redis_url, "init", "controller")

    assert refused.returncode == 2 and "reserved" in refused.stderr
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.keys("flags:controller:*") == []
    client.close()
