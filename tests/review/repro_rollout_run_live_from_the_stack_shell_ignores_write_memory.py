"""R15 defect: on `rollout stack up --topology ha`, the workers get ROLLOUT_WRITE_MEMORY=true
(deployments/stack.py worker_env) but the environment the stack prints and writes to env.sh
(StackState.env, what `source .stack/env.sh` gives the operator) does not. The controller
flow run from that shell (`rollout run --live`, the CLI's own entry to the same flow) then
neither loads the memory the workers saved in the Prefect Variable nor saves its own: right
after a failover that lost the controller's last write it decides on the older state, the
case the issue rules out ("never acts on a state older than what it last wrote"), and a
change it applies is unknown to the next scheduled run.

One `--topology ha` stack (about a minute). The worker's memory is put in the Variable as a
live scheduled run leaves it; the failover's loss as tests/integration/
test_write_memory_flow.py makes it (rollout:last_write older than the remembered id).
Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from deployments.stack import down, read_state, up
from rollout_core.bootstrap import Settings
from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.urls import redact_url
from tasks.write_memory import MEMORY_VARIABLE
from tests.review.ha_helpers import PROJECT, ROLLOUT


def test_a_live_run_from_the_stacks_shell_refuses_a_write_the_failover_lost(
    tmp_path: Path,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    directory = tmp_path / "ha-stack"
    up(directory, usual_ports=False, ui=False, topology="ha")
    try:
        state = read_state(directory)
        assert state is not None
        store = RedisFlagStore(connect(state.env["REDIS_URL"]))
        at = datetime.now(UTC)
        store.init("google", at)
        applied = store.set_percent("google", 10, "a live scheduled run's promotion", at=at)
        assert applied.applied and applied.audit_id
        worker = {**state.env, "ROLLOUT_WRITE_MEMORY": "true"}  # as stack.py's worker_env
        target = redact_url(Settings.from_env(worker).redis_target())
        with temporary_settings({PREFECT_API_URL: state.env["PREFECT_API_URL"]}):
            Variable.set(MEMORY_VARIABLE, {target: {"google": applied.audit_id}}, overwrite=True)
        # the failover lost it: the new master's last write for google is older
        store.client.hset(LAST_WRITE_HASH, "google", "older-write 1-0")

        shell = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_"))}
        shell.update(state.env, PREFECT_HOME=str(tmp_path / "operator-prefect-home"))
        done = subprocess.run(
            [ROLLOUT, "run", "--live", "--feature", "google"],
            capture_output=True, text=True, env=shell, cwd=PROJECT, timeout=300,
        )  # fmt: skip
        shown = done.stdout + done.stderr
        # observed: the pass reads google and decides (exit 0, a hold or a change)
        assert "Redis lost that write" in shown, shown[-2000:]
    finally:
        down(directory)
        pointer = directory / "postgres" / "cluster-path"
        if pointer.exists():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
