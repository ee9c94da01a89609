"""An operator's write that no replica acknowledged (WAIT 1 timed out) is never shown as a
plain success: `rollout set` and the `rollout-override/manual` flow say "applied,
unconfirmed: no replica acknowledged it within ..." and count it where the controller counts
its own (`rollout:telemetry:unconfirmed_writes_total`). Real primary and replica; the replica
is frozen (SIGSTOP), so it stays connected and acknowledges nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployments.ha import start_redis_node
from deployments.servers import RunningServer
from flows.override import rollout_override
from rollout_core.bootstrap import Adapters, use_adapters
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.telemetry import UNCONFIRMED_KEY
from tests.integration.conftest import prefect_test_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ROLLOUT = Path(sys.executable).with_name("rollout")


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    primary = start_redis_node(tmp_path / "primary")
    replica = start_redis_node(tmp_path / "replica", replica_of=primary.port)
    try:
        RedisFlagStore(connect(primary.url)).init("google", AT)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@contextmanager
def frozen(replica: RunningServer) -> Iterator[None]:
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)


def test_rollout_set_says_applied_unconfirmed_and_counts_it(
    primary_and_replica: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    primary, replica = primary_and_replica
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_"))}
    env.update(
        REDIS_URL=primary.url,
        ROLLOUT_REDIS_WAIT_MS="300",
        ROLLOUT_AUDIT_LOG=str(tmp_path / "rollout_log.md"),
        USER="alice",
    )
    with frozen(replica):
        done = subprocess.run(
            [str(ROLLOUT), "set", "google", "50", "--reason", "ramp"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown  # applied: the change is in Redis with its audit entry
    assert "google: 0% -> 50% (audit " in shown, shown
    assert "applied, unconfirmed: no replica acknowledged it within 300 ms" in shown, shown
    assert connect(primary.url).hget(UNCONFIRMED_KEY, "google") == "1"


def test_the_override_flow_says_applied_unconfirmed_and_counts_it(
    primary_and_replica: tuple[RunningServer, RunningServer],
    prefect_test_server: None,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary, replica = primary_and_replica
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(tmp_path / "rollout_log.md"))
    store = RedisFlagStore(connect(primary.url), wait_timeout_ms=300)
    adapters = Adapters(store=store, source=None, telemetry=None)  # type: ignore[arg-type]
    with use_adapters(adapters), frozen(replica):
        state = rollout_override("google", 50, "incident: hold at 50", return_state=True)
    message = str(state.message)
    assert state.is_completed() and "google: set to 50% (audit " in message, message
    assert "applied, unconfirmed: no replica acknowledged it within 300 ms" in message, message
    assert connect(primary.url).hget(UNCONFIRMED_KEY, "google") == "1"
