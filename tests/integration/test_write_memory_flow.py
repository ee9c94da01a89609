"""ROLLOUT_WRITE_MEMORY: a controller run remembers, in Prefect's database, the change it
applied, so a later run (a new process, any worker) refuses to promote on a Redis that lost it
(a Sentinel failover before a replica had it) instead of deciding on the older state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from flows.controller import rollout_controller
from rollout_core.flags import LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import Action
from rollout_core.redis_connection import connect
from tasks.write_memory import forget_all_writes
from tests.integration.conftest import flag_keys, seed_flag, write_config

pytestmark = pytest.mark.integration


def run(config: Path) -> Any:
    return rollout_controller(dry_run=False, config_path=str(config), return_state=True)


def outcome_of(state: Any, feature: str) -> Any:
    [outcome] = [o for o in state.result(raise_on_failure=False) if o.feature == feature]
    return outcome


@pytest.fixture
def write_memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ROLLOUT_WRITE_MEMORY", "true")
    forget_all_writes()
    yield
    forget_all_writes()


def test_a_later_run_holds_promotions_on_a_redis_that_lost_the_change_an_earlier_run_applied(
    flags: redis.Redis, tmp_path: Path, write_memory: None, controller_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, {"twice": None})
    seed_flag(flags, "twice", 0)
    first = run(config)
    promoted = outcome_of(first, "twice")
    assert promoted.applied and promoted.decision.action is Action.PROMOTE, first.message

    # what a failover to a replica that never got that write leaves: the keys as before it
    seed_flag(flags, "twice", 0, changed_ago=timedelta(hours=1))
    flags.hset(LAST_WRITE_HASH, "twice", "an-older-write 1-0")
    second = run(config)
    refused = outcome_of(second, "twice")
    assert second.is_completed() and not refused.applied, second.message
    # the promotion holds (a breach would still be rolled back), naming the lost write
    assert refused.decision.guard == "history", refused.summary
    assert "Redis lost that write" in refused.decision.reason
    assert str(promoted.audit_id) in refused.decision.reason
    assert flag_keys(flags, "twice")["rollout_percent"] == "0"  # not promoted, nothing written

    # the operator looks at the audit and sets the percent again: a newer write
    operator = RedisFlagStore(connect(controller_env["REDIS_URL"]))
    operator.set_percent(
        "twice", 10, "re-set after the failover", by="operator", at=datetime.now(UTC)
    )
    third = run(config)
    assert third.is_completed(), third.message
