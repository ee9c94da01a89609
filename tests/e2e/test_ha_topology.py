"""`rollout stack up --topology ha` end to end: Prefect on PostgreSQL with two workers, Redis
behind three Sentinels. A Sentinel failover in the middle of a rollout loses and doubles no
audited write; a worker host that dies with its run (before the run's first heartbeat) leaves
a run the zombie automation crashes, and the next run completes on the other worker; a stale
run that a dead worker left behind is skipped; `stack up` then restarts only the dead worker,
every flag and audit entry kept; the operator's shell (env.sh) gets what the workers get."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from deployments.ha import HEARTBEAT_SECONDS, fail_over_stack, sentinel_master_port
from deployments.ha_runs import (
    chain_problems,
    final,
    poll,
    run_host,
    run_state,
    start_run,
    state_of,
    store_of,
    take_down,
)
from deployments.stack import Component, stop_group, up
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore

pytestmark = pytest.mark.e2e

LIVE = {"dry_run": False}


@pytest.fixture(scope="module")
def ha_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("ha-stack")
    up(directory, usual_ports=False, ui=False, topology="ha")
    try:
        yield directory
    finally:
        take_down(directory)  # PostgreSQL's cluster under /tmp too


def assert_nothing_lost_or_doubled(store: RedisFlagStore, feature: str) -> None:
    """Each audited change starts where the one before ended, the flag holds the last one's
    percent, and no write id appears twice."""
    problems = chain_problems(store, feature)
    assert not problems, problems


def test_a_failover_during_a_rollout_loses_and_doubles_no_audited_write(ha_stack: Path) -> None:
    store = store_of(ha_stack)
    at = datetime.now(UTC)
    store.init("google", at)
    store.set_audience("google", internal_only=False, reason="e2e: public", by="e2e", at=at)
    store.set_percent("google", 50, "e2e: start at 50%", at=at)

    during = start_run(ha_stack, LIVE)
    old, new = fail_over_stack(ha_stack)  # while the run reads, decides and writes
    assert sentinel_master_port(state_of(ha_stack).env["REDIS_SENTINELS"]) == new != old
    run_state(ha_stack, during, final)  # Completed, or Failed on a Redis error: never half

    store = store_of(ha_stack)
    store.set_percent("google", 10, "e2e: after the failover", at=datetime.now(UTC))
    after = run_state(ha_stack, start_run(ha_stack, LIVE), final)
    assert after.is_completed(), after.message
    assert_nothing_lost_or_doubled(store, "google")


def kill_host(worker: Component, run_process: int) -> None:
    """What a machine death does: the worker and its flow run process die at once. (Prefect
    starts each flow run in a process group of its own: killing the worker's group alone
    leaves the run process alive, and it would end the run Crashed itself.)"""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(worker.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run_process, signal.SIGKILL)
    stop_group(worker.pid, signal.SIGKILL)


def test_a_run_whose_worker_host_died_before_its_first_heartbeat_is_crashed_and_frees_the_slot(
    ha_stack: Path,
) -> None:
    run_id = start_run(ha_stack, LIVE)
    # a worker took it and started its process: Pending (the engine imports Prefect for
    # several seconds before it turns Running), no heartbeat yet
    found = poll(lambda: run_host(ha_stack, run_id), lambda f: f is not None, 90, "its host")
    assert found is not None
    victim, run_process = found
    kill_host(victim, run_process)
    at_kill = run_state(ha_stack, run_id, lambda s: True)
    assert at_kill.is_pending(), (at_kill.name, at_kill.message)  # never sent a heartbeat

    # only the zombie automation (armed by Pending and Running, not only by a heartbeat) can
    # end it now: nothing of the run is left to crash it
    crashed = run_state(ha_stack, run_id, final, timeout=HEARTBEAT_SECONDS + 150)
    assert crashed.is_crashed(), (crashed.name, crashed.message)
    assert "no heartbeat" in str(crashed.message), crashed.message
    survivor = [
        c for c in state_of(ha_stack).components if c.name.startswith("worker") and c.is_alive()
    ]
    assert len(survivor) == 1 and survivor[0].pid != victim.pid

    # the slot is free again (concurrency limit 1): the next run is not cancelled, and the
    # surviving worker runs it
    following = run_state(ha_stack, start_run(ha_stack, LIVE), final)
    assert following.is_completed(), following.message


def test_a_stale_run_a_dead_worker_left_behind_is_skipped(ha_stack: Path) -> None:
    before = store_of(ha_stack).client.xlen(AUDIT_STREAM)
    left_behind = datetime.now(UTC) - timedelta(minutes=25)  # over 2 x the 10-minute interval
    state = run_state(ha_stack, start_run(ha_stack, LIVE, scheduled=left_behind), final)
    assert state.is_completed() and state.name == "Skipped", (state.name, state.message)
    assert "late" in str(state.message)
    assert store_of(ha_stack).client.xlen(AUDIT_STREAM) == before  # it wrote nothing


def test_stack_up_after_a_worker_died_restarts_only_that_worker_with_flags_and_audit_kept(
    ha_stack: Path,
) -> None:
    workers = [c for c in state_of(ha_stack).components if c.name.startswith("worker")]
    if all(w.is_alive() for w in workers):  # run alone: a worker dies here
        stop_group(workers[-1].pid, signal.SIGKILL)
    before = state_of(ha_stack)
    dead = sorted(c.name for c in before.dead())
    store = store_of(ha_stack)
    entries, flags = store.client.xlen(AUDIT_STREAM), store.read(["google"])

    again = up(ha_stack, usual_ports=False, ui=False, topology="ha")

    assert sorted(again.restarted_only) == dead and dead
    after = state_of(ha_stack)
    assert not after.dead()
    kept = [c for c in before.components if c.name not in dead]
    assert all(c in after.components for c in kept)  # Redis, PostgreSQL, Prefect: untouched
    store = store_of(ha_stack)
    assert store.client.xlen(AUDIT_STREAM) == entries
    assert store.read(["google"]) == flags
    following = run_state(ha_stack, start_run(ha_stack, LIVE), final)
    assert following.is_completed(), following.message


def test_the_operators_shell_gets_the_write_memory_and_heartbeats_the_workers_get(
    ha_stack: Path,
) -> None:
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in (ha_stack / "env.sh").read_text(encoding="utf-8").splitlines()
    )
    assert exported["ROLLOUT_WRITE_MEMORY"] == "true"  # `rollout run --live` refuses a lost write
    assert exported["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)
    for worker in state_of(ha_stack).components:
        if worker.name.startswith("worker") and worker.is_alive():
            environ = psutil.Process(worker.pid).environ()
            for name in ("ROLLOUT_WRITE_MEMORY", "REDIS_URL", "REDIS_SENTINELS", "PUSHGATEWAY_URL"):
                assert environ[name] == exported[name], name
