"""Reaching Redis through Sentinels that are not the happy path: Sentinels that require a
password (REDIS_SENTINEL_PASSWORD, or sentinel_password in the URL), a Sentinel that hangs up
(a fail-fast client tries it once), none answering, and a service they do not monitor (each
a readable line naming what to fix, without redis-py's client reprs). Real redis-server and
Sentinels, one of each: no failover is needed here."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from deployments.ha import start_sentinel
from deployments.servers import RunningServer, free_port, require_binary, start_process, start_redis
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_sdk import RolloutClient
from rollout_sdk.client import _connect

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-pw"
SENTINEL_PASSWORD = "sentinel-pw"
ROLLOUT = Path(sys.executable).with_name("rollout")
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def start_protected_sentinel(directory: Path, master_port: int) -> RunningServer:
    """A Sentinel with `requirepass` monitoring a master with its own password."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor rollout 127.0.0.1 {master_port} 1\n"
        f"sentinel auth-pass rollout {PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
    )

    def ready() -> bool:
        probe = redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1)
        try:
            return bool(probe.execute_command("SENTINEL", "MASTERS"))
        except redis.RedisError:
            return False
        finally:
            probe.close()

    argv = [require_binary("redis-server"), str(config), "--sentinel"]
    return start_process("sentinel", argv, port, directory, ready, f"127.0.0.1:{port}", 20)


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    master = start_redis(tmp_path / "redis", password=PASSWORD)
    sentinel = start_protected_sentinel(tmp_path / "sentinel", master.port)
    try:
        yield master, sentinel
    finally:
        sentinel.stop()
        master.stop()


def rollout(
    env_extra: dict[str, str], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_"))}
    env.update(env_extra, PREFECT_HOME=str(tmp_path / "prefect-home"), USER="alice")
    env.setdefault("ROLLOUT_AUDIT_LOG", str(tmp_path / "rollout_log.md"))
    return subprocess.run(
        [str(ROLLOUT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_password_protected_sentinels_are_reached_with_the_sentinel_password(
    protected: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    master, sentinel = protected
    url = (
        f"redis+sentinel://:{PASSWORD}@{sentinel.host_port}/rollout/0"
        f"?sentinel_password={SENTINEL_PASSWORD}"
    )
    assert connect(url).ping() is True  # the controller's client
    RedisFlagStore(connect(url)).init("google", AT)
    with RolloutClient(url, refresh_interval=1, subscribe=False) as gate:  # the SDK's
        assert gate.wait_ready(10) and gate.percent("google") == 0

    env = {
        "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{master.port}/0",
        "REDIS_SENTINELS": sentinel.host_port,
        "REDIS_SENTINEL_SERVICE": "rollout",
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
    }
    done = rollout(env, tmp_path, "status", "google")
    assert done.returncode == 0 and "google" in done.stdout, done.stdout + done.stderr

    # a wrong Sentinel password: a readable error, neither password in it
    done = rollout({**env, "REDIS_SENTINEL_PASSWORD": "wrong-pw"}, tmp_path, "status")
    shown = done.stdout + done.stderr
    assert done.returncode == 1 and "no Sentinel answered" in shown, shown
    assert "REDIS_SENTINEL_PASSWORD" in shown, shown
    assert "wrong-pw" not in shown and PASSWORD not in shown, shown


@contextmanager
def hanging_up_sentinel() -> Iterator[tuple[int, list[int]]]:
    """A port that accepts each connection and closes it at once (a Sentinel going away);
    the list counts the connections made to it."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_the_sdks_fail_fast_client_tries_an_unreachable_sentinel_once() -> None:
    with hanging_up_sentinel() as (port, accepted):
        client = _connect(f"redis+sentinel://127.0.0.1:{port}/rollout/0")
        with contextlib.suppress(redis.RedisError):  # no Sentinel answers: that is the point
            client.get("flags:google:rollout_percent")
        client.close()
    # redis-py's default Retry made 11 connections to it
    assert len(accepted) == 1, f"{len(accepted)} connections to one unreachable Sentinel"


def test_no_sentinel_answering_is_one_readable_line_without_client_reprs(tmp_path: Path) -> None:
    with hanging_up_sentinel() as (port, _):
        done = rollout(
            {"REDIS_SENTINELS": f"127.0.0.1:{port}", "REDIS_SENTINEL_SERVICE": "rollout"},
            tmp_path,
            "status",
        )
    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown
    assert f"no Sentinel answered (127.0.0.1:{port}: " in shown, shown
    assert "check REDIS_SENTINELS" in shown, shown
    assert "<redis." not in shown and len(shown) < 1000, shown


def test_a_service_the_sentinels_do_not_monitor_names_the_variable_and_the_ones_they_do(
    tmp_path: Path,
) -> None:
    master = start_redis(tmp_path / "redis")
    sentinel = start_sentinel(tmp_path / "sentinel", master.port)
    try:
        done = rollout(
            {"REDIS_SENTINELS": sentinel.host_port, "REDIS_SENTINEL_SERVICE": "nosuch"},
            tmp_path,
            "status",
        )
    finally:
        sentinel.stop()
        master.stop()
    shown = done.stdout + done.stderr
    assert done.returncode == 1, shown
    assert "the Sentinels do not monitor 'nosuch' (they monitor: rollout)" in shown, shown
    assert "REDIS_SENTINEL_SERVICE" in shown and "<redis." not in shown, shown
