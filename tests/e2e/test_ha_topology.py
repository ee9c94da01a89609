"""`rollout stack up --topology ha` end to end: Prefect on PostgreSQL with two workers, Redis
behind three Sentinels. A Sentinel failover in the middle of a rollout loses and doubles no
audited write; a worker killed mid-run leaves a Crashed run and the next run completes on the
other worker; a stale run that a dead worker left behind is skipped."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployments.ha import fail_over_stack, sentinel_master_port
from deployments.ha_runs import (
    busy_worker,
    chain_problems,
    final,
    poll,
    run_state,
    start_run,
    state_of,
    store_of,
    take_down,
)
from deployments.stack import stop_group, up
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


def test_a_killed_worker_leaves_a_crashed_run_and_the_next_run_completes_on_the_other(
    ha_stack: Path,
) -> None:
    run_id = start_run(ha_stack, LIVE)
    run_state(ha_stack, run_id, lambda s: s.is_running() or s.is_final())
    victim = poll(lambda: busy_worker(ha_stack), lambda w: w is not None, 30, "a busy worker")
    stop_group(victim.pid, signal.SIGKILL)  # the worker and its flow run process, at once

    crashed = run_state(ha_stack, run_id, final, timeout=150)
    assert crashed.is_crashed(), (crashed.name, crashed.message)
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
