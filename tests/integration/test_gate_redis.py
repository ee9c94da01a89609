"""The gate against a real redis-server: an operator's redis-cli SET is served after the next
refresh, with every client flavour; a killed server is served from memory, then fails closed."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from deployments.servers import RunningServer, require_binary
from rollout_core.minimal_gate import MinimalGate
from rollout_sdk import RolloutClient
from rollout_sdk.bucketing import bucket, is_in_rollout
from rollout_sdk.keys import CHANGES_CHANNEL

pytestmark = pytest.mark.integration
IDS = [f"user-{number}" for number in range(1_000)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def gate_client(url: str, **options: object) -> redis.Redis:
    """A client that fails fast: no retries, short timeouts."""
    return redis.Redis.from_url(
        url, socket_timeout=0.2, socket_connect_timeout=0.2, retry=None, **options
    )


def redis_cli(url: str, *command: str) -> str:
    """What an operator types: `redis-cli SET flags:google:rollout_percent 37`."""
    argv = [require_binary("redis-cli"), "-u", url, *command]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10).stdout


def allowed(gate: RolloutClient | MinimalGate) -> list[bool]:
    return [gate.allow("google", {"actor_id": actor}) for actor in IDS]


@pytest.mark.parametrize("options", [{}, {"decode_responses": True}, {"protocol": 2}])
def test_an_operator_set_is_served_after_the_next_refresh(
    redis_url: str, options: dict[str, object]
) -> None:
    client = gate_client(redis_url, **options)
    gate = RolloutClient(client=client, environ={}, start=False)
    assert gate.refresh(["google"])
    assert allowed(gate) == [False] * len(IDS)  # no keys, no env: 0%
    assert redis_cli(redis_url, "SET", "flags:google:rollout_percent", "37").strip() == "OK"
    assert gate.percent("google") == 0  # the snapshot, until the refresher reads again
    assert gate.refresh()
    assert gate.percent("google") == 37
    assert allowed(gate) == [is_in_rollout(bucket("google", actor), 37) for actor in IDS]
    client.close()


def test_a_killed_server_serves_the_last_state_then_says_no(own_redis: RunningServer) -> None:
    clock = FakeClock()
    redis_cli(own_redis.url, "SET", "flags:google:rollout_percent", "100")
    client = gate_client(own_redis.url)
    gate = RolloutClient(client=client, max_stale=60, clock=clock, environ={}, start=False)
    assert gate.refresh(["google"])
    assert all(allowed(gate))
    own_redis.kill()
    clock.now += 30
    assert not gate.refresh()
    assert all(allowed(gate))  # the refresh failed; the last known state is served
    clock.now += 30
    assert not any(allowed(gate))
    assert gate.percent("google") == 0
    client.close()


def test_minimal_gate_serves_an_operator_set_within_its_ttl(redis_url: str) -> None:
    redis_cli(redis_url, "SET", "flags:google:rollout_percent", "37")
    redis_cli(redis_url, "SADD", "rollout:features", "google")
    gate = MinimalGate(gate_client(redis_url), cache_ttl_sec=0.1, environ={})
    try:
        assert gate.client.wait_ready(5)
        assert allowed(gate) == [is_in_rollout(bucket("google", actor), 37) for actor in IDS]
    finally:
        gate.close()


def test_minimal_gates_built_per_call_share_one_client_answer_from_redis_and_spare_the_pool(
    redis_url: str,
) -> None:
    import threading

    redis_cli(redis_url, "MSET", "flags:google:rollout_percent", "100",
              "flags:google:internal_only", "false", "flags:google:enabled", "true")  # fmt: skip
    caller = redis.Redis.from_url(redis_url, max_connections=1)  # the service's own pool
    watcher = redis.Redis.from_url(redis_url)
    threads_before = threading.active_count()

    answers = [MinimalGate(caller).allow("google", {"actor_id": "dana"}) for _ in range(200)]

    assert answers == [True] * 200  # built and asked at once, as the seed's callers do
    assert threading.active_count() - threads_before <= 2  # one refresher, one listener
    gate = MinimalGate(caller)
    assert gate.client is MinimalGate(caller).client
    deadline = time.monotonic() + 10
    while watcher.pubsub_numsub(CHANGES_CHANNEL)[0][1] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watcher.pubsub_numsub(CHANGES_CHANNEL)[0][1] == 1  # subscribed...
    assert gate.client.refresh() is True  # ...and the caller's only connection is still free
    watcher.close()
