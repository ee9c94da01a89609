"""Controller runs on a running `rollout stack` (the HA topology's end-to-end test and the fault
soak share these): start a run of the scheduled deployment, wait for its state, find the
worker running it, and read a feature's audited chain of changes back out of Redis.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psutil

from deployments.stack import Component, down
from deployments.stack import require_state as state_of
from rollout_core.flags import AUDIT_STREAM, LAST_WRITE_HASH, RedisFlagStore
from rollout_core.redis_connection import connect

__all__ = [
    "CONTROLLER",
    "audit_chain",
    "busy_worker",
    "chain_problems",
    "final",
    "poll",
    "run_host",
    "run_state",
    "start_run",
    "state_of",
    "store_of",
    "take_down",
]

CONTROLLER = "rollout-controller/every-10-minutes"
T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """`read()` every 0.2 s until `done` accepts its value; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not there after {timeout:.0f} s (last: {value!r})")
        time.sleep(0.2)


def take_down(directory: Path) -> None:
    """`down()`, which also removes PostgreSQL's cluster when it lives under /tmp (a parent of
    `directory` is out of the postgres user's reach: deployments/ha.py)."""
    down(directory)


def store_of(directory: Path) -> RedisFlagStore:
    return RedisFlagStore(connect(state_of(directory).env["REDIS_URL"]))


def _client(directory: Path) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(state_of(directory).env["PREFECT_API_URL"])


def start_run(
    directory: Path,
    parameters: dict[str, Any],
    scheduled: datetime | None = None,
    client: Any = None,
    deployment: str = CONTROLLER,
) -> UUID:
    """A run of `deployment` (the scheduled controller), due now or at `scheduled`; pass an
    open `client` (SyncPrefectClient) to save a connection per run."""
    from prefect.states import Scheduled

    if client is None:
        with _client(directory) as opened:
            return start_run(directory, parameters, scheduled, opened, deployment)
    found = client.read_deployment_by_name(deployment)
    run = client.create_flow_run_from_deployment(
        found.id,
        parameters=parameters,
        state=Scheduled(scheduled_time=scheduled) if scheduled else None,
    )
    return UUID(str(run.id))


def run_state(
    directory: Path, run_id: UUID, accept: Any, timeout: float = 120, client: Any = None
) -> Any:
    """The run's state once `accept(state)` holds; TimeoutError after `timeout` seconds."""
    if client is None:
        with _client(directory) as opened:
            return run_state(directory, run_id, accept, timeout, opened)
    run = poll(
        lambda: client.read_flow_run(run_id),
        lambda r: r.state is not None and accept(r.state),
        timeout=timeout,
        what=f"flow run {run_id}",
    )
    return run.state


def final(state: Any) -> bool:
    return bool(state.is_final())


def busy_worker(directory: Path) -> Component | None:
    """The worker component with a flow run process under it."""
    for component in state_of(directory).components:
        alive = component.name.startswith("worker") and component.is_alive()
        if alive and psutil.Process(component.pid).children(recursive=True):
            return component
    return None


def run_host(directory: Path, run_id: UUID) -> tuple[Component, int] | None:
    """The worker running the flow run `run_id` and the run's own process (the pid its worker
    recorded as the run's infrastructure_pid once it started it, while the run is still
    Pending); None until then, or when no live worker of the stack has that process."""
    with _client(directory) as client:
        recorded = client.read_flow_run(run_id).infrastructure_pid
    if not recorded or not str(recorded).rpartition(":")[2].isdigit():
        return None
    pid = int(str(recorded).rpartition(":")[2])
    for component in state_of(directory).components:
        if component.name.startswith("worker") and component.is_alive():
            try:
                under = {p.pid for p in psutil.Process(component.pid).children(recursive=True)}
            except psutil.Error:
                continue
            if pid in under:
                return component, pid
    return None


def audit_chain(store: RedisFlagStore, feature: str) -> list[dict[str, str]]:
    """The feature's applied (not dry-run) audit entries that carry a percent, oldest first."""
    entries = store.client.xrange(AUDIT_STREAM)
    return [
        fields
        for _, fields in entries
        if fields.get("feature") == feature
        and fields.get("new_percent")
        and fields.get("dry_run") != "true"
    ]


def chain_problems(store: RedisFlagStore, feature: str) -> list[str]:
    """What breaks the feature's audited chain: a write id twice, a change that does not start
    where the one before ended, a flag or last-write record other than the last entry's."""
    chain = audit_chain(store, feature)
    if not chain:
        return [f"{feature} has no audited change"]
    problems = []
    ids = [entry["write_id"] for entry in chain if entry.get("write_id")]
    if len(ids) != len(set(ids)):
        problems.append(f"a write id appears twice: {sorted(ids)}")
    for before, after in itertools.pairwise(chain):
        if after.get("action") != "init" and after["old_percent"] != before["new_percent"]:
            problems.append(f"a change without its audit entry between {before} and {after}")
    percent = store.read([feature])[feature].percent
    if float(chain[-1]["new_percent"]) != percent:
        problems.append(f"the flag holds {percent:g}, the last audit entry {chain[-1]}")
    last_write = store.client.hget(LAST_WRITE_HASH, feature)
    if last_write is None or last_write.split(" ")[0] != chain[-1]["write_id"]:
        problems.append(f"{LAST_WRITE_HASH} {feature} is {last_write}, not the last entry's")
    return problems
