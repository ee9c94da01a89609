"""What the controller last wrote, kept in Prefect's database between runs (ROLLOUT_WRITE_MEMORY).

Each run wires a new flag store, so the store's own memory of its last applied changes ends
with the run. With the memory on, a run loads it from the Prefect Variable
`rollout-last-applied` before reading the flags and saves it after applying: a run on any
worker then refuses a feature whose `rollout:last_write` in Redis is older than the change a
previous run applied (a Sentinel failover lost it). A failure here is a warning, never a
failed run: the memory guards, it does not decide.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from rollout_core.ports import FlagStore

__all__ = ["MEMORY_VARIABLE", "recall_writes", "remember_writes"]

MEMORY_VARIABLE = "rollout-last-applied"
# Prefect refuses a variable value over 5,000 characters: the newest entries are kept
_MAX_ENTRIES = 120


def _memory_of(store: FlagStore) -> dict[str, str] | None:
    memory = getattr(store, "last_applied", None)
    return memory if isinstance(memory, dict) else None


def _stream_key(audit_id: str) -> tuple[int, int]:
    ms, _, seq = audit_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


@task(cache_policy=NO_CACHE)
def recall_writes(store: FlagStore, redis_target: str) -> None:
    """Load the changes earlier runs applied on this Redis into the store's memory."""
    from prefect.variables import Variable

    memory = _memory_of(store)
    if memory is None:
        return
    try:
        saved: Any = Variable.get(MEMORY_VARIABLE, default={})
    except Exception as exc:  # the memory guards; a run without it still decides
        get_run_logger().warning("write memory not loaded (%s); deciding without it", exc)
        return
    entries = saved.get(redis_target, {}) if isinstance(saved, dict) else {}
    for feature, audit_id in entries.items():
        if isinstance(audit_id, str):
            known = memory.get(feature, "")
            if _stream_key(audit_id) > _stream_key(known):
                memory[feature] = audit_id


@task(cache_policy=NO_CACHE)
def remember_writes(store: FlagStore, redis_target: str) -> str | None:
    """Save the store's memory (newest entries) for the next run; a warning when it fails."""
    from prefect.variables import Variable

    memory = _memory_of(store)
    if not memory:
        return None
    newest = sorted(memory.items(), key=lambda item: _stream_key(item[1]), reverse=True)
    try:
        saved: Any = Variable.get(MEMORY_VARIABLE, default={})
        value = saved if isinstance(saved, dict) else {}
        value[redis_target] = dict(newest[:_MAX_ENTRIES])
        Variable.set(MEMORY_VARIABLE, value, overwrite=True)
    except Exception as exc:
        warning = f"write memory not saved ({exc}); the next run cannot refuse a lost write"
        get_run_logger().warning(warning)
        return warning
    return None
