"""RolloutClient against a real redis-server: pushed changes, polling, a hung, slow, down and
restarted server, and fork. No assertion is timed; each waits for a condition with a deadline.

Change notices: until the store's scripts PUBLISH on rollout:changes themselves, these tests
publish the notice after the store's write, as the scripts will.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from deployments.servers import RunningServer, start_redis
from rollout_core.flags import RedisFlagStore
from rollout_sdk import STALE, RolloutClient
from rollout_sdk.keys import CHANGES_CHANNEL, FEATURES_REGISTRY
from tests.integration.redis_faults import FailoverProxy, HungRedis, SlowProxy
from tests.integration.traffic import poll

pytestmark = pytest.mark.integration
IDS = [f"user-{number}" for number in range(2_000)]


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether `check()` became true before the deadline (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def seed(url: str, feature: str = "google", percent: str = "100") -> redis.Redis:
    client = redis.Redis.from_url(url, decode_responses=True)
    client.mset(
        {
            f"flags:{feature}:enabled": "true",
            f"flags:{feature}:internal_only": "false",
            f"flags:{feature}:rollout_percent": percent,
        }
    )
    client.sadd(FEATURES_REGISTRY, feature)
    return client


@pytest.fixture
def flags(redis_url: str) -> Iterator[redis.Redis]:
    client = seed(redis_url)
    yield client
    client.close()


def test_an_audited_set_with_its_notice_reaches_a_client_that_polls_once_a_minute(
    redis_url: str, flags: redis.Redis
) -> None:
    with RolloutClient(redis_url, refresh_interval=60, environ={}) as client:
        assert client.wait_ready(5)
        assert client.percent("google") == 100
        assert eventually(lambda: client.status().refresh_errors == 0)
        time.sleep(0.3)  # the listener subscribes in its own thread
        store = RedisFlagStore(flags)
        result = store.set_percent("google", 10, "test", at=datetime.now(UTC))
        assert result.applied
        flags.publish(CHANGES_CHANNEL, "google")
        assert eventually(lambda: client.percent("google") == 10, timeout=2)


def test_a_plain_redis_cli_set_is_caught_by_the_poll_interval(
    redis_url: str, flags: redis.Redis
) -> None:
    with RolloutClient(redis_url, refresh_interval=0.2, subscribe=False, environ={}) as client:
        assert client.wait_ready(5)
        flags.set("flags:google:rollout_percent", "37")  # no notice
        assert eventually(lambda: client.percent("google") == 37)


def test_a_feature_initialised_later_is_found_through_the_registry(
    redis_url: str, flags: redis.Redis
) -> None:
    with RolloutClient(redis_url, refresh_interval=0.2, environ={}) as client:
        assert client.wait_ready(5)
        seed(redis_url, "slack", "50").close()
        assert eventually(lambda: "slack" in client.status().features)
        assert client.percent("slack") == 50


def test_a_hung_server_never_holds_a_request_and_the_state_is_served_until_stale(
    own_redis: RunningServer,
) -> None:
    seed(own_redis.url).close()
    now = [time.monotonic()]
    client = RolloutClient(
        own_redis.url, refresh_interval=0.1, max_stale=60, environ={}, clock=lambda: now[0]
    )
    try:
        assert client.wait_ready(5)
        errors_before = client.status().refresh_errors
        own_redis.process.send_signal(signal.SIGSTOP)
        answers = [client.allow("google", {"actor_id": actor}) for actor in IDS * 10]
        assert all(answers)  # every call answered from memory while the server hangs
        assert eventually(lambda: client.status().refresh_errors > errors_before)
        assert all(client.allow("google", {"actor_id": actor}) for actor in IDS)
        now[0] += 61
        assert not client.allow("google", {"actor_id": "user-1"})
        assert client.evaluate("google", {"actor_id": "user-1"}).reason == STALE
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
        client.close()


def test_a_server_that_accepts_and_never_answers_gets_a_fail_closed_answer_at_once() -> None:
    with HungRedis() as hung, RolloutClient(hung.url, environ={}) as client:
        assert not client.allow("google", {"actor_id": "user-1"})
        assert client.percent("google") == 0
        assert not client.wait_ready(0.5)
        assert not client.is_ready


def test_a_slow_server_is_read_in_the_background_while_requests_answer(
    redis_url: str, redis_server: RunningServer, flags: redis.Redis
) -> None:
    with (
        SlowProxy(redis_server.port, delay=0.3) as slow,
        RolloutClient(slow.url, refresh_interval=0.5, environ={}) as client,
    ):
        assert client.wait_ready(10)
        flags.set("flags:google:rollout_percent", "0")
        answered = 0
        while (answer := client.evaluate("google", {"actor_id": IDS[answered % 2000]})).percent:
            assert answer.value  # still the 100% read before the change
            answered += 1
        assert answered > 0  # requests answered while the slow read was under way
        assert eventually(lambda: client.percent("google") == 0)


def test_a_restarted_server_is_read_again_and_its_notices_arrive(
    own_redis: RunningServer,
) -> None:
    seed(own_redis.url).close()
    with RolloutClient(own_redis.url, refresh_interval=0.2, environ={}) as client:
        assert client.wait_ready(5)
        own_redis.kill()
        assert eventually(lambda: client.status().refresh_errors > 0)
        assert client.allow("google", {"actor_id": "user-1"})  # the last known state
        restarted = start_redis(own_redis.data_dir, port=own_redis.port)
        own_redis.process = restarted.process
        fresh = seed(own_redis.url, percent="0")  # an empty server (no persistence)
        assert eventually(lambda: client.percent("google") == 0)
        assert eventually(lambda: client.status().seconds_since_refresh is not None)
        time.sleep(0.5)  # the listener resubscribes within its back-off
        fresh.set("flags:google:rollout_percent", "42")
        fresh.publish(CHANGES_CHANNEL, "google")
        assert eventually(lambda: client.percent("google") == 42)
        fresh.close()


def test_change_notices_arrive_again_after_a_failover_that_black_holes_the_subscription(
    own_redis: RunningServer, redis_server: RunningServer, redis_url: str
) -> None:
    seed(own_redis.url, percent="10").close()
    new = seed(redis_url, percent="10")
    proxy = FailoverProxy(own_redis.port)
    try:
        with RolloutClient(
            proxy.url, refresh_interval=60, max_stale=600, environ={}
        ) as client:  # polls once a minute: only a notice can bring the change in time
            assert client.wait_ready(5)
            proxy.failover(redis_server.port)
            new.set("flags:google:rollout_percent", "30")

            def noticed() -> bool:
                new.publish(CHANGES_CHANNEL, "google")
                return client.percent("google") == 30

            assert eventually(noticed, timeout=15)
    finally:
        proxy.close()
        new.close()


def _child(client: RolloutClient, ready: Any, go: Any, results: Any) -> None:
    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("rollout-"))
    ready.set()
    go.wait(10)
    results.put((names, eventually(lambda: client.percent("google") == 55)))


def test_a_forked_child_restarts_its_own_refresher(redis_url: str, flags: redis.Redis) -> None:
    context = multiprocessing.get_context("fork")
    ready, go, results = context.Event(), context.Event(), context.Queue()
    with RolloutClient(redis_url, refresh_interval=60, environ={}) as client:
        assert client.wait_ready(5)
        child = context.Process(target=_child, args=(client, ready, go, results))
        child.start()
        try:
            assert ready.wait(10)
            # the child's listener subscribes beside the parent's: two subscribers (a fixed
            # sleep here raced the child's start on a loaded machine)
            poll(
                lambda: dict(flags.pubsub_numsub(CHANGES_CHANNEL)),
                lambda n: n.get(CHANGES_CHANNEL, 0) >= 2,
                15,
                "the child's subscription",
            )
            flags.set("flags:google:rollout_percent", "55")
            flags.publish(CHANGES_CHANNEL, "google")
            go.set()
            names, changed = results.get(timeout=15)
        finally:
            child.join(15)
        # the child restarted its refresher and listener (other clients of this test process,
        # forked along, restart theirs too)
        assert set(names) == {"rollout-listen", "rollout-run"}
        assert changed, "the child never applied the change notice"
        assert child.exitcode == 0
