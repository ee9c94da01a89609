"""A script call still in flight after its caller gave up, against a real redis-server: the
script refuses its write id once Redis's clock is past the write's deadline, and the caller's
read-back waits for that deadline, so "not applied" is never followed by the write landing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.errors import FlagStoreError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from tests.integration.redis_faults import ScriptDelayingProxy

pytestmark = pytest.mark.integration
AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SOCKET_TIMEOUT = 0.3  # the deadline is then Redis's TIME + 0.3 + 1.0 + 0.005 s


@pytest.fixture
def direct(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisFlagStore(client)
    store.init("google", AT)
    store.set_percent("google", 5, "warm the script cache", "alice", at=AT)
    yield client
    client.close()


def store_through(proxy: ScriptDelayingProxy) -> RedisFlagStore:
    client = redis.Redis.from_url(proxy.url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT)
    return RedisFlagStore(client)


def audit_length(client: redis.Redis) -> int:
    return int(client.xlen(AUDIT_STREAM))


def test_a_write_that_lands_after_its_deadline_is_refused_and_reported_not_applied(
    redis_server: RunningServer, direct: redis.Redis
) -> None:
    proxy = ScriptDelayingProxy(redis_server.port, delay=2.5)
    entries = audit_length(direct)
    try:
        with pytest.raises(FlagStoreError, match="not applied, nothing written"):
            store_through(proxy).set_percent("google", 10, "review", "alice", at=AT)
        assert proxy.delivered.wait(30)  # the delayed call has now run in Redis
    finally:
        proxy.close()

    assert direct.get("flags:google:rollout_percent") == "5"
    assert audit_length(direct) == entries


def test_a_write_in_flight_before_its_deadline_is_waited_for_and_reported_applied(
    redis_server: RunningServer, direct: redis.Redis
) -> None:
    proxy = ScriptDelayingProxy(redis_server.port, delay=0.6)
    try:
        result = store_through(proxy).set_percent("google", 10, "review", "alice", at=AT)
    finally:
        proxy.close()

    assert result.applied and result.recovered, result
    assert direct.get("flags:google:rollout_percent") == "10"
