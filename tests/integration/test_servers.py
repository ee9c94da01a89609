"""The launcher starts each real server and it answers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from deployments.servers import RunningServer


def test_redis_server_answers_ping(redis_url: str) -> None:
    assert redis.Redis.from_url(redis_url).ping() is True


def test_prometheus_scrapes_a_pushgateway(
    prometheus_factory: Callable[..., RunningServer], pushgateway: RunningServer
) -> None:
    prometheus = prometheus_factory(scrape_targets={"pushgateway": [pushgateway.host_port]})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/status/config", timeout=5) as response:
        body = json.load(response)
    assert pushgateway.host_port in body["data"]["yaml"]


def test_alertmanager_starts_with_an_empty_config(
    alertmanager_factory: Callable[[Path], RunningServer], tmp_path: Path
) -> None:
    config = tmp_path / "am.yml"
    config.write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    server = alertmanager_factory(config)
    with urllib.request.urlopen(f"{server.url}/api/v2/status", timeout=5) as response:
        assert json.load(response)["cluster"]["status"] == "disabled"


def test_a_redis_server_with_a_password_is_ready_only_once_it_answers_ping(tmp_path: Path) -> None:
    from deployments.servers import start_redis

    server = start_redis(tmp_path / "redis", password="s3cret")
    try:
        client = redis.Redis(port=server.port, password="s3cret")
        assert client.ping() is True
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong").ping()
    finally:
        server.stop()


def test_alive_tells_a_reused_pid_and_a_zombie_from_the_process_it_recorded() -> None:
    from deployments.stack import alive, start_time

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as sleeper:
        started = start_time(sleeper.pid)
        assert alive(sleeper.pid, started)
        assert not alive(sleeper.pid, started - 5)  # same pid, another start: a reused pid
        sleeper.kill()
        wait_until(lambda: psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE)
        assert not alive(sleeper.pid)  # exited, not yet reaped: a zombie is not running
    assert start_time(sleeper.pid) == 0.0


def test_stop_group_stops_the_leader_and_its_children_and_reports_an_empty_group() -> None:
    from deployments.stack import _group_members, stop_group

    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); time.sleep(60)"
    )
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_until(lambda: len(_group_members(leader.pid)) == 2)
        assert stop_group(leader.pid, signal.SIGTERM, grace=5) is True
        leader.wait(5)
        assert _group_members(leader.pid) == []
        assert stop_group(leader.pid, signal.SIGTERM) is False
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
