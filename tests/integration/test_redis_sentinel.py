"""The Redis edge on a real primary, replica and three Sentinels: writes follow the master
through a failover with nothing lost or duplicated, a write no replica acknowledged is
reported unconfirmed, and a read that lost the controller's last write holds promotions
(a breach is still rolled back) until a newer write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from deployments.ha import RedisHA, start_redis_ha
from rollout_core.config import FeatureSpec
from rollout_core.controller import run_pass
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action, FlagState
from rollout_core.redis_connection import connect
from rollout_sdk import RolloutClient
from tests.error_rate_source import ErrorRateSource
from tests.integration.traffic import poll

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ROLLOUT = Path(sys.executable).with_name("rollout")


@pytest.fixture
def redis_ha(tmp_path: Path) -> Iterator[RedisHA]:
    ha = start_redis_ha(tmp_path / "redis")
    try:
        yield ha
    finally:
        ha.stop()


def redis_direct(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True)


def audit_of(store: RedisFlagStore, feature: str) -> list[dict[str, str]]:
    entries = store.client.xrange(AUDIT_STREAM)
    return [fields for _, fields in entries if fields.get("feature") == feature]


def test_acknowledged_writes_survive_a_failover_with_one_audit_entry_each(
    redis_ha: RedisHA,
) -> None:
    # a generous WAIT: on a loaded machine a replica may take over a second to acknowledge
    store = RedisFlagStore(connect(redis_ha.url), wait_timeout_ms=10_000)
    store.init("google", T0)
    first = store.set_percent("google", 10, "ramp", at=T0)
    assert first.applied and not first.unconfirmed  # one replica acknowledged it (WAIT 1)

    old, new = redis_ha.fail_over()
    assert old != new

    # the same clients follow the new master: no reconnect by hand, no new URL
    assert store.read(["google"])["google"].percent == 10
    second = store.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=10))
    assert second.applied and second.current_percent == 50
    percents = [entry["new_percent"] for entry in audit_of(store, "google") if entry["new_percent"]]
    assert percents == ["0", "10", "50"]  # init, then each change once: none lost or doubled
    ids = [entry["write_id"] for entry in audit_of(store, "google") if "write_id" in entry]
    assert len(ids) == len(set(ids))


def test_a_write_no_replica_acknowledged_is_applied_but_unconfirmed(redis_ha: RedisHA) -> None:
    store = RedisFlagStore(connect(redis_ha.url), wait_timeout_ms=300)
    store.init("google", T0)
    replica = next(n for n in redis_ha.nodes if n.port != redis_ha.master_port())
    os.kill(replica.process.pid, signal.SIGSTOP)  # connected, but it acknowledges nothing
    try:
        result = store.set_percent("google", 10, "ramp", at=T0)
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    assert result.applied and result.unconfirmed
    assert "no replica acknowledged it within 300 ms" in result.message
    assert store.read(["google"])["google"].percent == 10


def lose_a_promotion(ha: RedisHA, store: RedisFlagStore) -> str:
    """google public at 10% (a replica has it), then 10% -> 50% on the master only, and a
    failover before the replica hears of it; the lost change's audit id."""
    store.init("google", T0)
    store.set_audience("google", internal_only=False, reason="public", by="t", at=T0)
    kept = store.set_percent("google", 10, "ramp", at=T0)
    assert kept.applied and not kept.unconfirmed
    replica = next(n for n in ha.nodes if n.port != ha.master_port())
    master = ha.node(ha.master_port())
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        # the link drops with the replica frozen: what follows never reaches it
        redis_direct(master.port).client_kill_filter(_type="replica")
        lost = store.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=20))
        assert lost.applied and lost.unconfirmed  # only the master has it
        master.kill()  # before the replica ever hears of it
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    ha.nodes.remove(master)
    ha.wait_for_master(replica.port)
    return str(lost.audit_id)


SPEC = FeatureSpec.model_validate(
    {
        "name": "google",
        "slos": [{"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01}],
    }
)


def test_after_a_failover_that_lost_its_write_promotions_hold_and_a_breach_still_rolls_back(
    redis_ha: RedisHA,
) -> None:
    store = RedisFlagStore(connect(redis_ha.url), wait_timeout_ms=200)
    lost = lose_a_promotion(redis_ha, store)

    state = store.read_each(["google"])["google"]
    assert isinstance(state, FlagState) and state.percent == 10
    [problem] = state.problems
    assert "Redis lost that write" in problem and lost in problem
    healthy = run_pass(
        [SPEC], store, ErrorRateSource(0.001), T0 + timedelta(hours=1), dry_run=False
    )
    held = healthy["google"]
    assert not held.applied and held.decision is not None, held.summary
    assert held.decision.guard == "history" and held.decision.proposed is Action.PROMOTE

    breach = run_pass([SPEC], store, ErrorRateSource(0.2), T0 + timedelta(hours=2), dry_run=False)
    rolled_back = breach["google"]
    assert rolled_back.result is Action.ROLLBACK, (rolled_back.status, rolled_back.error)
    assert store.client.get("flags:google:rollout_percent") == "0"
    percents = [e["new_percent"] for e in audit_of(store, "google") if e["new_percent"]]
    assert percents == ["0", "0", "10", "0"]  # init, audience, 10%, the rollback: 50% is gone


def rollout(ha: RedisHA, tmp_path: Path, *args: str, **extra: str) -> str:
    """`rollout ...` as an operator runs it on the HA stack (through the Sentinels)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_"))}
    env.update(
        REDIS_URL=ha.url,
        ROLLOUT_AUDIT_LOG=str(tmp_path / "rollout_log.md"),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        USER="alice",
    )
    env.update(extra)
    done = subprocess.run(
        [str(ROLLOUT), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rollout_set_rewrite_ends_a_lost_write_hold_at_the_percent_redis_kept(
    redis_ha: RedisHA, tmp_path: Path
) -> None:
    store = RedisFlagStore(connect(redis_ha.url), wait_timeout_ms=200)
    lose_a_promotion(redis_ha, store)

    # a plain set to the kept percent writes nothing, and says how to write it again
    plain = rollout(redis_ha, tmp_path, "set", "google", "10", "--reason", "re-set")
    assert "already at 10%; nothing written (--rewrite writes it again" in plain, plain
    state = store.read_each(["google"])["google"]
    assert isinstance(state, FlagState) and state.problems

    shown = rollout(
        redis_ha, tmp_path, "set", "google", "10", "--rewrite", "--reason", "re-set after failover"
    )
    (entry_id, entry) = store.client.xrevrange(AUDIT_STREAM, count=1)[0]
    assert shown.startswith(f"google: rewrote 10% (audit {entry_id})"), shown
    assert (entry["old_percent"], entry["new_percent"], entry["action"]) == ("10", "10", "hold")
    assert entry["by"] == "alice" and entry["reason"] == "re-set after failover"
    state = store.read_each(["google"])["google"]
    assert isinstance(state, FlagState) and not state.problems, state.problems
    assert state.percent == 10


def test_the_sdk_reads_flags_through_the_sentinels_after_a_failover(redis_ha: RedisHA) -> None:
    store = RedisFlagStore(connect(redis_ha.url))
    store.init("google", T0)
    store.set_percent("google", 40, "ramp", at=T0)
    redis_ha.fail_over()
    gate = RolloutClient(redis_ha.url, refresh_interval=0.2, subscribe=False, start=False)
    try:
        assert gate.refresh(["google"])
        assert gate.percent("google") == 40
    finally:
        gate.close()


def test_the_sdks_change_subscription_follows_the_master_through_a_failover(
    redis_ha: RedisHA,
) -> None:
    store = RedisFlagStore(connect(redis_ha.url))
    store.init("google", T0)
    store.set_percent("google", 10, "ramp", at=T0)
    # refreshes too rare to matter: only a change notice can bring the new percent in time
    with RolloutClient(redis_ha.url, refresh_interval=3600, max_stale=7200) as gate:
        assert gate.wait_ready(10)
        assert gate.percent("google") == 10
        redis_ha.fail_over()
        store.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=10))
        poll(lambda: gate.percent("google"), lambda p: p == 50, 30, "the notice after failover")
