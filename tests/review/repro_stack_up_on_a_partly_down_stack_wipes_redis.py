"""R15 defect: `rollout stack up --topology ha` on a stack that is partly down (one worker
died, or PostgreSQL crashed; `rollout stack status` itself says "run `rollout stack up`: it
restarts a stack that is partly down") stops and restarts every process, the healthy Redis
primary and replica included, and they run without persistence (--save "" --appendonly no):
every flag, the whole audit stream and rollout:last_write are gone. The only word is "the
stack in ... was partly down (worker-2); restarting it". PostgreSQL keeps its cluster, so
Prefect (and the write memory Variable) survive while the flags they refer to do not.

Seen live: after SIGKILL of the postmaster, `rollout stack up --topology ha` restarted the
stack and `rollout audit google` answered "no audit entries", `rollout status` "unset (0%)".

One `--topology ha` stack, restarted once (about a minute and a half). Run:
.venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path

from deployments.stack import down, read_state, stop_group, up
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.redis_connection import connect


def store_of(directory: Path) -> RedisFlagStore:
    state = read_state(directory)
    assert state is not None
    return RedisFlagStore(connect(state.env["REDIS_URL"]))


def test_restarting_a_partly_down_ha_stack_keeps_the_flags_and_the_audit_trail(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "ha-stack"
    up(directory, usual_ports=False, ui=False, topology="ha")
    try:
        store = store_of(directory)
        at = datetime.now(UTC)
        store.init("google", at)
        assert store.set_percent("google", 10, "ramp", at=at).applied
        entries = store.client.xlen(AUDIT_STREAM)
        state = read_state(directory)
        assert state is not None
        [worker] = [c for c in state.components if c.name == "worker-2"]
        stop_group(worker.pid, signal.SIGKILL)  # one worker dies; Redis is healthy

        again = up(directory, usual_ports=False, ui=False, topology="ha")
        assert any("partly down" in note for note in again.notes)

        after = store_of(directory)
        # observed: 0 entries and google not initialised
        assert after.client.xlen(AUDIT_STREAM) == entries
        assert after.read(["google"])["google"].percent == 10
    finally:
        down(directory)
        pointer = directory / "postgres" / "cluster-path"
        if pointer.exists():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
