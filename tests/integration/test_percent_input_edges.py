"""A percent the gate cannot serve is refused where it is typed (review 9, R14): more than 2
decimals (the gate's 0.01 granularity) at the CLI and in the store's manual set, so what is
printed is what is stored; nothing is written."""

from __future__ import annotations

import pytest
import redis

from rollout_core.errors import ConfigError
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from tests.integration.one_feature import NOW, audit_of, seed
from tests.integration.test_cli_redis import rollout


@pytest.mark.parametrize(("typed", "suggested"), [("0.0000001", "0"), ("99.9999999", "100")])
def test_rollout_set_refuses_a_percent_finer_than_the_gate_serves(
    redis_url: str, typed: str, suggested: str
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    done = rollout(redis_url, "set", "f1", typed, "--reason", "r", "--by", "me")
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"percent '{typed}' has more than 2 decimals" in done.stdout + done.stderr
    assert f"write e.g. {suggested}" in done.stdout + done.stderr
    assert client.get("flags:f1:rollout_percent") == "50"
    assert audit_of(client) == []


def test_rollout_set_stores_and_prints_a_hundredth_as_typed(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    done = rollout(redis_url, "set", "f1", "0.01", "--reason", "r", "--by", "me")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "50% -> 0.01%" in done.stdout
    assert client.get("flags:f1:rollout_percent") == "0.01"


def test_the_stores_manual_set_refuses_a_percent_finer_than_the_gate_serves(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    seed(client, "50")
    store = RedisFlagStore(connect(redis_url))
    with pytest.raises(ConfigError, match="has more than 2 decimals"):
        store.set_percent("f1", 12.345, "r", "me", at=NOW)
    assert client.get("flags:f1:rollout_percent") == "50"
    assert audit_of(client) == []
