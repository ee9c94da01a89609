"""R15 defect: `rollout stack up --topology ha` where a default (single) stack is up answers
"The stack in ... is already up." and exits 0, printing the single stack's environment
(REDIS_URL=redis://..., no REDIS_SENTINELS): deployments/stack.py `up` returns the previous
state whenever no process of it is dead, whatever topology was asked for. An operator who
asked for Sentinel failover and PostgreSQL believes they have it. (StackState does not even
record its topology.) The reverse, `up` over an HA stack, is silent the same way.

One single-topology stack (about 30 s). Run: .venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

from pathlib import Path

from deployments.stack import down, up


def test_asking_for_the_ha_topology_over_a_single_stack_is_never_already_up(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "stack"
    up(directory, usual_ports=False, ui=False, topology="single")
    try:
        try:
            again = up(directory, usual_ports=False, ui=False, topology="ha")
        except RuntimeError as refused:  # a clear refusal naming the topology is fine
            assert "topology" in str(refused) or "single" in str(refused)
            return
        if again.already_up:
            # observed: already up, a single stack, no note
            assert "REDIS_SENTINELS" in again.state.env, (
                f"asked for --topology ha, told already up: {again.state.env['REDIS_URL']}; "
                f"notes: {again.notes}"
            )
    finally:
        down(directory)
