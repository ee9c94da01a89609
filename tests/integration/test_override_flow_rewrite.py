"""The override flow's `rewrite` (the Prefect-UI path of `rollout set --rewrite`) on a real
redis-server: after a failover lost the controller's last write, a plain override at the
percent Redis kept writes nothing, and a rewrite writes it again, which ends the lost-write
hold (as tests/integration/test_redis_sentinel.py shows for the CLI)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from flows.override import rollout_override
from rollout_core.bootstrap import Adapters, use_adapters
from rollout_core.flags import AUDIT_STREAM, LAST_WRITE_HASH, RedisFlagStore
from rollout_core.model import FlagState
from rollout_core.redis_connection import connect
from tests.integration.conftest import prefect_test_server  # noqa: F401 (fixture)
from tests.integration.one_feature import NOW

pytestmark = pytest.mark.integration


@pytest.fixture
def audit_log(
    prefect_test_server: None,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The override's Markdown log in the test's directory (and the Prefect test server)."""
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(tmp_path / "rollout_log.md"))


def held(store: RedisFlagStore) -> tuple[str, ...]:
    state = store.read_each(["google"])["google"]
    assert isinstance(state, FlagState), state
    return state.problems


def test_the_override_with_rewrite_ends_a_lost_write_hold_at_the_percent_redis_kept(
    redis_url: str, audit_log: None
) -> None:
    controller = RedisFlagStore(connect(redis_url))  # remembers its last applied change
    controller.init("google", NOW)
    kept = controller.set_percent("google", 10, "ramp", at=NOW)
    lost = controller.set_percent("google", 50, "ramp", at=NOW + timedelta(minutes=20))
    assert lost.applied and controller.last_applied["google"] == lost.audit_id
    # a failover lost the 10 -> 50 write: Redis holds 10 and the earlier write as its last one
    controller.client.set("flags:google:rollout_percent", "10")
    controller.client.hset(LAST_WRITE_HASH, "google", f"w {kept.audit_id}")
    [hold] = [problem for problem in held(controller) if "Redis lost that write" in problem]
    assert "--rewrite" in hold and "rollout-override/manual, rewrite=true" in hold  # both routes

    operator = RedisFlagStore(connect(redis_url))  # the override's own store
    with use_adapters(Adapters(store=operator, source=None, telemetry=None)):  # type: ignore[arg-type]
        plain = rollout_override("google", 10, "re-set", return_state=True)
        assert plain.is_completed(), plain.message
        assert "already at 10%, nothing written (rewrite=true writes it again" in plain.message
        assert held(controller)

        rewritten = rollout_override(
            "google", 10, "re-set after failover", rewrite=True, return_state=True
        )

    assert rewritten.is_completed(), rewritten.message
    ((entry_id, entry),) = controller.client.xrevrange(AUDIT_STREAM, count=1)
    assert (rewritten.message or "").startswith(f"google: rewrote 10% (audit {entry_id})")
    assert (entry["old_percent"], entry["new_percent"], entry["action"]) == ("10", "10", "hold")
    assert (entry["by"], entry["reason"]) == ("manual", "re-set after failover")
    assert held(controller) == ()
    assert controller.client.get("flags:google:rollout_percent") == "10"


def test_the_override_with_rewrite_at_another_percent_sets_it_as_usual(
    redis_url: str, audit_log: None
) -> None:
    store = RedisFlagStore(connect(redis_url))
    store.init("google", NOW)
    with use_adapters(Adapters(store=store, source=None, telemetry=None)):  # type: ignore[arg-type]
        state = rollout_override("google", 25, "incident 9", rewrite=True, return_state=True)
    assert state.is_completed(), state.message
    assert (state.message or "").startswith("google: set to 25% (audit ")
    assert store.client.get("flags:google:rollout_percent") == "25"
