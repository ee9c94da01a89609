"""R15 defect: a controller run whose worker dies before the run's first heartbeat is never
marked Crashed, so it holds the deployment's concurrency slot (limit 1, CANCEL_NEW) for good
and every later run of the schedule is Cancelled ("Deployment concurrency limit reached"):
the controller is down until an operator finds and force-sets the run by hand.

The zombie automation (deployments/ha.py:create_zombie_automation) is a proactive trigger
armed only `after` a `prefect.flow-run.heartbeat` event. A run is Pending (slot taken) while
its worker starts the engine process (pull step, `import prefect`: 12.7 s on the HA stack
here, against ~0.2 s from Running to the first heartbeat), and a run killed in that window
has sent no heartbeat, so nothing ever expects one from it. Seen live on `rollout stack up
--topology ha`: run 274b5677 killed 0.2 s after Running stayed Running for 150 s+, and the
next run was Cancelled by the concurrency limit.

Why tests/e2e/test_ha_topology.py does not see it: its `stop_group(victim.pid, SIGKILL)`
("the worker and its flow run process, at once") kills the worker's process group only.
Prefect 3.9 starts each flow run in a process group of its own (runner/_starter_engine.py,
start_new_session), so the engine survives and itself ends the run Crashed ("Execution was
aborted by Python system exit call", 2 s later, seen live): the heartbeat automation is
never exercised by that test.

Starts one `--topology ha` stack (about a minute), kills both workers while the run is
Pending, starts a fresh worker, then waits past heartbeat + grace (45 s) with margin.
Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from pathlib import Path
from typing import Any

import psutil

from deployments.ha import HEARTBEAT_SECONDS, ZOMBIE_GRACE_SECONDS
from deployments.stack import down, read_state, start_worker, stop_group, up
from tests.integration.traffic import poll

CONTROLLER = "rollout-controller/every-10-minutes"


def test_a_run_whose_worker_died_before_its_first_heartbeat_is_crashed_and_frees_the_slot(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    directory = tmp_path / "ha-stack"
    up(directory, usual_ports=False, ui=False, topology="ha")
    extra = None
    try:
        state = read_state(directory)
        assert state is not None
        api = state.env["PREFECT_API_URL"]
        with SyncPrefectClient(api) as client:
            deployment = client.read_deployment_by_name(CONTROLLER)
            run = client.create_flow_run_from_deployment(deployment.id)
            poll(
                lambda: client.read_flow_run(run.id).state,
                lambda s: s is not None and s.type.value in ("PENDING", "RUNNING"),
                timeout=90,
                what="the run picked up by a worker",
            )
            # both workers die (a host lost), with whatever engine process they had started
            for component in state.components:
                if component.name.startswith("worker"):
                    with contextlib.suppress(psutil.Error):
                        for child in psutil.Process(component.pid).children(recursive=True):
                            with contextlib.suppress(psutil.Error):
                                child.kill()
                    stop_group(component.pid, signal.SIGKILL)
            worker_env = {
                **state.env,
                "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
                "ROLLOUT_WRITE_MEMORY": "true",
            }
            extra = start_worker(directory / "prefect-worker-3", api, worker_env, name="worker-3")

            def run_state() -> Any:
                return client.read_flow_run(run.id).state

            waited = HEARTBEAT_SECONDS + ZOMBIE_GRACE_SECONDS + 45
            with contextlib.suppress(Exception):  # the poll's timeout: asserted just below
                poll(run_state, lambda s: s.is_final(), timeout=waited, what="the dead run")
            stuck = run_state()
            assert stuck.is_final(), (
                f"the run is still {stuck.name} {waited} s after its worker died: "
                "it holds the concurrency slot"
            )
            following = client.create_flow_run_from_deployment(deployment.id)
            after = poll(
                lambda: client.read_flow_run(following.id).state,
                lambda s: s.is_final(),
                timeout=120,
                what="the next run",
            )
            assert not after.is_cancelled(), after.message
    finally:
        if extra is not None:
            stop_group(extra.process.pid, signal.SIGKILL)
        down(directory)
        pointer = directory / "postgres" / "cluster-path"
        if pointer.exists():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
