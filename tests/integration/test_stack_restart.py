"""`rollout stack up` on a stack that is partly down, with real redis-servers and Sentinels (no
Prefect: the other components are stood for by a live process): only the dead Redis server
or Sentinel is started again, in its folder and on its port, and every flag and audit entry
is still there (the stack's Redis keeps an append-only file)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from deployments.ha import (
    SENTINEL_SERVICE,
    RedisHA,
    fail_over_stack,
    sentinel_master_port,
    start_redis_ha,
)
from deployments.servers import RunningServer, start_redis
from deployments.stack import (
    STATE_FILE,
    Component,
    StackState,
    _component,
    _last_master_dir,
    _swap,
    down,
    read_state,
    start_time,
    stop_group,
    up,
)
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.redis_connection import connect
from tests.integration.traffic import poll

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def other_component() -> Iterator[Component]:
    """A live process standing for the components that stay up (Prometheus, Prefect, ...)."""
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    with subprocess.Popen(argv, start_new_session=True) as sleeper:
        try:
            yield Component("prometheus", sleeper.pid, start_time(sleeper.pid), "http://x", "p.log")
        finally:
            sleeper.kill()


def record(directory: Path, servers: list[RunningServer], other: Component, **env: str) -> None:
    components = [_component(server) for server in servers] + [other]
    topology = "ha" if "REDIS_SENTINELS" in env else "single"
    urls = {"Redis": env["REDIS_URL"]}
    state = StackState(str(directory), components, dict(env), urls, topology=topology)
    (directory / STATE_FILE).write_text(state.to_json(), encoding="utf-8")


def pids(directory: Path) -> set[int]:
    state = read_state(directory)
    assert state is not None
    return {c.pid for c in state.components}


def test_up_on_a_stack_whose_redis_died_restarts_only_redis_with_every_flag_and_audit_entry(
    tmp_path: Path, other_component: Component
) -> None:
    server = start_redis(tmp_path / "redis", appendonly=True)  # as the single stack starts it
    record(tmp_path, [server], other_component, REDIS_URL=server.url)
    try:
        store = RedisFlagStore(connect(server.url))
        store.init("google", T0)
        assert store.set_percent("google", 10, "ramp", at=T0).applied
        entries = store.client.xlen(AUDIT_STREAM)
        stop_group(server.process.pid, signal.SIGKILL)  # Redis dies; the rest runs

        result = up(tmp_path, usual_ports=False, ui=False)

        assert result.restarted_only == ["redis"]
        assert any("left running, untouched: prometheus" in note for note in result.notes)
        state = read_state(tmp_path)
        assert state is not None and not state.dead()
        assert other_component in state.components  # the same process, not restarted
        after = RedisFlagStore(connect(server.url))  # the same port
        assert after.client.xlen(AUDIT_STREAM) == entries
        assert after.read(["google"])["google"].percent == 10
    finally:
        down(tmp_path)


def recorded_ha(directory: Path, other_component: Component) -> RedisHA:
    """A Redis primary, replica and three Sentinels, recorded in `directory`'s stack.json as
    an HA stack's Redis beside `other_component`."""
    ha = start_redis_ha(directory / "redis")
    record(
        directory,
        ha.servers(),
        other_component,
        REDIS_URL=ha.url,
        REDIS_SENTINELS=ha.sentinel_hosts,
        REDIS_SENTINEL_SERVICE=SENTINEL_SERVICE,
    )
    return ha


def test_up_on_an_ha_stack_restarts_a_dead_replica_and_sentinel_following_the_master(
    tmp_path: Path, other_component: Component
) -> None:
    ha = recorded_ha(tmp_path, other_component)
    try:
        store = RedisFlagStore(connect(ha.url))
        store.init("google", T0)
        assert store.set_percent("google", 10, "ramp", at=T0).applied
        master = ha.master_port()
        before = pids(tmp_path)
        [replica] = [n for n in ha.nodes if n.port != master]
        for server in (replica, ha.sentinels[0]):
            stop_group(server.process.pid, signal.SIGKILL)

        result = up(tmp_path, usual_ports=False, ui=False)

        assert sorted(result.restarted_only) == ["redis-replica", "sentinel"]
        # the master, two Sentinels and the other component run on, untouched
        assert len(before & pids(tmp_path)) == len(before) - 2
        copy = redis.Redis(port=replica.port, decode_responses=True)
        poll(
            lambda: copy.info("replication").get("master_link_status"),
            lambda status: status == "up",
            timeout=30,
            what="the restarted replica's link to the master",
        )
        assert copy.xlen(AUDIT_STREAM) == store.client.xlen(AUDIT_STREAM) > 0
        assert sentinel_master_port(ha.sentinels[0].host_port) == master  # it follows it
        copy.close()
    finally:
        down(tmp_path)


def test_the_stacks_redis_stopped_and_started_again_in_its_folders_keeps_its_data(
    tmp_path: Path,
) -> None:
    ha = start_redis_ha(tmp_path / "redis")
    try:
        [primary] = [n for n in ha.nodes if n.port == ha.master_port()]
        store = RedisFlagStore(connect(primary.url))
        store.init("google", T0)
        assert store.set_percent("google", 50, "ramp", at=T0).applied
        entries = store.client.xlen(AUDIT_STREAM)
    finally:
        ha.stop()
    again = start_redis_ha(tmp_path / "redis", [primary.port])
    try:
        store = RedisFlagStore(connect(again.nodes[0].url))
        assert store.client.xlen(AUDIT_STREAM) == entries
        assert store.read(["google"])["google"].percent == 50
    finally:
        again.stop()


def test_a_whole_restart_after_a_failover_starts_the_last_master_as_primary_with_its_writes(
    tmp_path: Path, other_component: Component
) -> None:
    """What `up` does when a component it cannot restart alone died: find the folder of the
    master the Sentinels last named, stop everything, give that folder the primary's name,
    start the Redis servers again."""
    ha = recorded_ha(tmp_path, other_component)
    again = None
    try:
        store = RedisFlagStore(connect(ha.url), wait_timeout_ms=100)
        store.init("google", T0)
        assert store.set_percent("google", 10, "ramp", at=T0).applied
        old, _ = fail_over_stack(tmp_path)  # the replica's folder now holds the master
        state = read_state(tmp_path)
        assert state is not None
        [restarted] = [c for c in state.components if c.url == f"redis://127.0.0.1:{old}/0"]
        stop_group(restarted.pid, signal.SIGKILL)  # the old primary, now a replica, dies too
        assert store.set_percent("google", 50, "ramp on the new master", at=T0).applied
        entries = store.client.xlen(AUDIT_STREAM)

        assert _last_master_dir(state) == "redis-replica"
        down(tmp_path, remove_outside_cluster=False)
        _swap(tmp_path / "redis" / "redis-primary", tmp_path / "redis" / "redis-replica")
        again = start_redis_ha(tmp_path / "redis")

        after = RedisFlagStore(connect(again.url))
        assert after.read(["google"])["google"].percent == 50
        assert after.client.xlen(AUDIT_STREAM) == entries
    finally:
        if again is not None:
            again.stop()
        down(tmp_path)
