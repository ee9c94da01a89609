"""Fixtures shared by every layer: real servers on free loopback ports, stopped at the end.

A missing server binary fails the test (MissingServer), it never skips: CI must see it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never reach a real Prefect API or a developer's ~/.prefect by accident: a private
# PREFECT_HOME per session, no inherited API URL (flow tests start their own server).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rollout-tests-prefect-")
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["ROLLOUT_AUDIT_LOG"] = os.path.join(os.environ["PREFECT_HOME"], "rollout_log.md")

from deployments.servers import (
    RunningServer,
    start_alertmanager,
    start_prometheus,
    start_pushgateway,
    start_redis,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RunningServer) -> Iterator[str]:
    """A real Redis, emptied before each test. Restarted if a previous test killed it."""
    import redis

    if not redis_server.is_running():
        fresh = start_redis(redis_server.data_dir, port=redis_server.port)
        redis_server.process = fresh.process
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RunningServer]:
    """A Redis of the test's own, for tests that kill it."""
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_pushgateway(tmp_path / "pushgateway")
    yield server
    server.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a Prometheus with the given scrape targets and rules; all are stopped after."""
    started: list[RunningServer] = []

    def start(**kwargs: Any) -> RunningServer:
        server = start_prometheus(tmp_path / f"prometheus-{len(started)}", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[Callable[[Path], RunningServer]]:
    started: list[RunningServer] = []

    def start(config_file: Path) -> RunningServer:
        server = start_alertmanager(tmp_path / f"alertmanager-{len(started)}", config_file)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
