"""The Redis edge on a real primary, replica and three Sentinels: writes follow the master
through a failover with nothing lost or duplicated, a write no replica acknowledged is
reported unconfirmed, and a read that lost the controller's last write is refused."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from deployments.ha import RedisHA, start_redis_ha
from rollout_core.errors import FlagStoreError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_sdk import RolloutClient
from tests.integration.traffic import poll

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


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


def test_after_a_failover_that_lost_its_write_the_controller_refuses_the_older_state(
    redis_ha: RedisHA,
) -> None:
    store = RedisFlagStore(connect(redis_ha.url), wait_timeout_ms=200)
    store.init("google", T0)
    kept = store.set_percent("google", 10, "ramp", at=T0)
    assert kept.applied and not kept.unconfirmed
    replica = next(n for n in redis_ha.nodes if n.port != redis_ha.master_port())
    master = redis_ha.node(redis_ha.master_port())
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        # the link drops with the replica frozen: what follows never reaches it
        redis_direct(master.port).client_kill_filter(_type="replica")
        lost = store.set_percent("google", 50, "ramp", at=T0 + timedelta(minutes=10))
        assert lost.applied and lost.unconfirmed  # only the master has it
        master.kill()  # before the replica ever hears of it
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    redis_ha.nodes.remove(master)
    redis_ha.wait_for_master(replica.port)

    states = store.read_each(["google"])
    assert isinstance(states["google"], FlagStoreError)
    assert "Redis lost that write" in str(states["google"])
    assert str(lost.audit_id) in str(states["google"])
    assert [e["new_percent"] for e in audit_of(store, "google") if e["new_percent"]] == ["0", "10"]


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
