"""R15 defects where the Sentinel discovery meets the callers' error handling:

1. The SDK's client is built to fail fast (rollout_sdk/client.py _connect: "one try, short
   timeouts: only the background waits on it"), and the controller allows 2 retries, but
   rollout_sdk/sentinel.py master_client passes only the timeouts to the Sentinels'
   connections: they keep redis-py's default Retry (10 retries). Each unreachable Sentinel
   listed before a live one costs every new process ~3.7 s: with 2 of 3 Sentinels down (a
   state Sentinel is built to survive), `rollout set` took 10.1 s instead of 1.3 s and a
   RolloutClient 6.1 s to become ready on the HA stack; with all down, `rollout status` took
   25.5 s to fail.
2. With no Sentinel answering, the error the CLI prints embeds redis-py's repr of every
   Sentinel client (`<redis.client.Redis(<redis.connection.ConnectionPool(<redis.connection.
   Connection(db=0,username=<REDACTED>,...` about 1,500 characters per Sentinel).
3. A service name the Sentinels do not monitor: "No master found for 'nosuch'; is redis-server
   running there? check REDIS_URL": it names neither REDIS_SENTINEL_SERVICE nor the names
   the Sentinels do monitor (SENTINEL MASTERS answers them).

Real redis-server and Sentinel (deployments.ha), loopback listeners for the unreachable one.
Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deployments.ha import start_sentinel
from deployments.servers import start_redis
from rollout_sdk.client import _connect
from tests.review.ha_helpers import ROLLOUT


@contextmanager
def hanging_up_sentinel() -> Iterator[tuple[int, list[int]]]:
    """A port that accepts each connection and closes it at once (a Sentinel that is going
    away); the list counts the connections made to it."""
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


def test_the_sdks_fail_fast_client_tries_an_unreachable_sentinel_once(tmp_path: Path) -> None:
    with hanging_up_sentinel() as (port, accepted):
        client = _connect(f"redis+sentinel://127.0.0.1:{port}/rollout/0")
        # no Sentinel answers: the refresher logs and retries later
        with contextlib.suppress(Exception):
            client.get("flags:google:rollout_percent")
        # observed: 11 connections (redis-py's default Retry on the Sentinel's connections)
        assert len(accepted) == 1, f"{len(accepted)} connections to one unreachable Sentinel"


def cli(env_extra: dict[str, str], tmp_path: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_"))}
    env.update(env_extra, PREFECT_HOME=str(tmp_path / "prefect-home"))
    done = subprocess.run([ROLLOUT, *args], capture_output=True, text=True, env=env, timeout=120)
    return done.stdout + done.stderr


def test_no_sentinel_answering_is_one_readable_line_without_client_reprs(tmp_path: Path) -> None:
    with hanging_up_sentinel() as (port, _):
        shown = cli(
            {"REDIS_SENTINELS": f"127.0.0.1:{port}", "REDIS_SENTINEL_SERVICE": "rollout"},
            tmp_path,
            "status",
        )
    assert "REDIS_SENTINELS" in shown or f"127.0.0.1:{port}" in shown, shown
    assert "<redis.client.Redis(" not in shown, f"{len(shown)} characters: {shown[:400]}..."


def test_an_unknown_service_names_redis_sentinel_service_and_the_monitored_names(
    tmp_path: Path,
) -> None:
    master = start_redis(tmp_path / "redis")
    sentinel = start_sentinel(tmp_path / "sentinel", master.port)
    try:
        shown = cli(
            {"REDIS_SENTINELS": sentinel.host_port, "REDIS_SENTINEL_SERVICE": "nosuch"},
            tmp_path,
            "status",
        )
    finally:
        sentinel.stop()
        master.stop()
    assert "nosuch" in shown
    # observed: "No master found for 'nosuch'; is redis-server running there? check REDIS_URL"
    assert "REDIS_SENTINEL_SERVICE" in shown and "rollout" in shown, shown
