"""Every write script type-checks every key it writes before its first write (review 9, R1):
Redis never rolls a script back, so a wrong-typed controller key must write nothing at all."""

from __future__ import annotations

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.errors import FlagStoreError
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.integration.one_feature import NOW, audit_of, one_pass, ratio_spec, seed

BREACH = ratio_spec("vector(400)", "vector(2000)")  # 20% errors over 2,000 requests


@pytest.mark.parametrize(
    "owned_key", ["rollout:recommendations", "rollout:features", "rollout:last_write"]
)
def test_a_wrong_typed_controller_key_makes_the_rollback_write_nothing(
    redis_url: str, prometheus_factory, owned_key: str
) -> None:
    prometheus: RunningServer = prometheus_factory()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "100")
    client.set(owned_key, "stray string")

    outcome = one_pass(redis_url, prometheus.url, BREACH)

    assert client.get("flags:f1:rollout_percent") == "100"
    assert client.get("flags:f1:last_change_time") is None
    assert audit_of(client) == []
    assert outcome.percent == 100.0
    assert owned_key in outcome.summary and f"redis-cli DEL {owned_key}" in outcome.summary


def test_rollout_pause_over_a_wrong_typed_last_write_hash_writes_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    client.set("rollout:last_write", "stray string")
    store = RedisFlagStore(connect(redis_url))
    with pytest.raises(FlagStoreError, match="rollout:last_write holds a string, not a hash"):
        store.set_paused("f1", True, "incident", "oncall", NOW)
    assert client.get("flags:f1:paused") == "false"
    assert audit_of(client) == []


def test_an_override_over_a_wrong_typed_last_write_hash_writes_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "10")
    client.set("rollout:last_write", "stray string")
    store = RedisFlagStore(connect(redis_url))
    with pytest.raises(FlagStoreError, match="redis-cli DEL rollout:last_write"):
        store.set_override("f1", "actor:alice", "true", "support", "oncall", NOW)
    assert client.hgetall("flags:f1:overrides") == {}
    assert audit_of(client) == []
