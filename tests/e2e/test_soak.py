"""CI's share of the fault soak (benchmarks/soak.py) on the real HA stack: 14 real controller
runs with every fault kind forced once (a failover before and one during a run, Prometheus
stopped, the Pushgateway restarted, a worker killed and replaced, an operator's set and pause
racing a run, a corrupt flag value), healthy and breaching traffic in stretches of five runs,
and every invariant checked over the whole history. A worker host killed with its run (the
zombie automation crashing it, ~60 s) is test_ha_topology's; the 1,000-run soak, with mid-run
kills at random, runs by hand."""

from __future__ import annotations

import pytest

from benchmarks.soak import FAULTS, soak

pytestmark = pytest.mark.e2e

FORCED = {
    1: "redis_failover:before",
    2: "pushgateway_restart",
    3: "worker_killed:idle",
    6: "corrupt_value",
    8: "prometheus_outage:stop1",
    9: "redis_failover:in_flight",
    11: "concurrent_set",
    12: "concurrent_pause",
}


# about 2 minutes on a quiet 2-core machine (a run takes ~4 s, the stack ~30 s to start);
# pytest's 300 s default leaves a loaded machine no margin
@pytest.mark.timeout(900)
def test_fourteen_runs_under_every_fault_kind_break_no_invariant() -> None:
    state, violations, text = soak(runs=14, seed=3, fault_rate=0.0, forced=FORCED, stretch=5)
    assert not state.interrupted, text
    assert {fault: state.injected[fault] for fault in FAULTS} == dict.fromkeys(FAULTS, 1) | {
        "redis_failover": 2
    }, text
    # each fault was followed by a Completed run (the last tick has no fault and completes)
    assert state.survived == state.injected, text
    assert violations and not any(violations.values()), text
    states = [tick.state for tick in state.ticks]
    assert len(states) == 14, text
    assert set(states) <= {"Completed", "Failed", "Crashed", "Cancelled"}, text
    # the stack keeps prefect.yaml's 10-minute schedule (a dry run): when it falls between
    # two ticks it takes the concurrency slot, and that tick's run is Cancelled
    cancelled = [t.message for t in state.ticks if t.state == "Cancelled"]
    assert len(cancelled) <= 1 and all("concurrency limit" in m for m in cancelled), text
    # the run under a corrupt value and the run without Prometheus fail; the run after the
    # worker kill completes on the other worker (or the replacement)
    assert states[6] == "Failed" and states[8] == "Failed", text
    assert states[3] == "Completed", text
    assert states.count("Completed") >= 10, text
    actions = {
        entry.get("action") for entry in state.seen.values() if entry.get("by") == "controller"
    }
    assert {"promote", "rollback"} <= actions, text
