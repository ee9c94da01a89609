"""CI's short slice of the fault soak (benchmarks/soak.py): 30 controller ticks on a real
Redis primary + replica + three Sentinels and a real Pushgateway, faults on half the ticks,
every invariant checked over the whole history. The long soak runs by hand."""

from __future__ import annotations

from benchmarks.soak import soak


def test_thirty_ticks_under_random_faults_break_no_invariant() -> None:
    state, violations, text = soak(runs=30, seed=3, features=3, fault_rate=0.5)
    assert state.injected["redis_failover"] >= 1, text
    assert sum(state.injected.values()) >= 8, text
    assert violations and not any(violations.values()), text
    assert sum(1 for tick in state.ticks if tick.status == "ok") >= 15, text
