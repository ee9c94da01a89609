"""The sample service as a closed loop: a RolloutClient on a real redis-server picks each
request's path, an injected fault hits exactly the rolled-out share, and a rollback lowers the
error rate a real Prometheus sees."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis

from deployments.sample_service import SampleService
from deployments.servers import RunningServer
from rollout_core.flags import RedisFlagStore
from rollout_sdk import RolloutClient
from rollout_sdk.bucketing import bucket
from rollout_sdk.keys import CHANGES_CHANNEL
from tests.integration.traffic import poll

pytestmark = pytest.mark.integration
ACTORS = [f"actor-{number:05d}" for number in range(1000)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisFlagStore]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisFlagStore(client)
    store.init("google", datetime.now(UTC))
    client.set("flags:google:internal_only", "false")
    yield store
    client.close()


def audited_set(store: RedisFlagStore, percent: float) -> None:
    """`rollout set`: the store's compare-and-set, then the notice (until the script sends it)."""
    assert store.set_percent("google", percent, "test", at=datetime.now(UTC)).applied
    store.client.publish(CHANGES_CHANNEL, "google")


def errors_and_requests(service: SampleService) -> tuple[int, int]:
    [row] = service.rows()
    return row.errors, row.requests


def test_an_injected_fault_hits_exactly_the_rolled_out_share(
    redis_url: str, store: RedisFlagStore
) -> None:
    audited_set(store, 37)
    gate = RolloutClient(redis_url, environ={}, start=False)
    assert gate.refresh(["google"])
    clock = FakeClock()
    service = SampleService(providers=["google"], rps=100, clock=clock, gate=gate, actors=1000)
    service.inject(error_rate=1.0)  # only the feature's path breaks
    clock.now += 10  # 1,000 requests: each actor once
    in_rollout = sum(bucket("google", actor) < 3700 for actor in ACTORS)
    assert service.state()["google"]["feature_requests"] == in_rollout
    errors, requests = errors_and_requests(service)
    assert requests == 1000
    assert in_rollout <= errors <= in_rollout + 2  # + the healthy path's 0.2%
    audited_set(store, 10)
    assert gate.refresh(["google"])
    clock.now += 10
    at_ten = sum(bucket("google", actor) < 1000 for actor in ACTORS)
    errors_after, _ = errors_and_requests(service)
    assert at_ten <= errors_after - errors <= at_ten + 2
    gate.close()


def test_without_a_gate_every_request_takes_the_feature_path() -> None:
    clock = FakeClock()
    service = SampleService(providers=["google"], rps=100, clock=clock)
    service.inject(error_rate=0.5)
    clock.now += 10
    assert errors_and_requests(service) == (500, 1000)


def error_ratio(prometheus_url: str) -> float | None:
    query = "sum(rate(action_error_total[4s])) / sum(rate(action_exec_total[4s]))"
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_rollback_visibly_lowers_the_error_rate_in_prometheus(
    redis_url: str, store: RedisFlagStore, prometheus_factory: Callable[..., RunningServer]
) -> None:
    audited_set(store, 100)
    with (
        RolloutClient(redis_url, refresh_interval=1, environ={}) as gate,
        SampleService(providers=["google"], rps=200, gate=gate) as service,
    ):
        assert gate.wait_ready(5)
        prometheus = prometheus_factory(
            scrape_targets={"sample": [service.host_port]}, scrape_interval="1s"
        )
        service.inject(error_rate=0.5)

        def ratio() -> float:
            return error_ratio(prometheus.url) or -1.0

        poll(ratio, lambda value: value > 0.4, timeout=40, what="the 50% fault at 100%")
        audited_set(store, 10)
        poll(ratio, lambda value: 0 <= value < 0.12, timeout=30, what="the fault at 10%")
        share = service.state()["google"]
        assert share["feature_requests"] < share["requests"]
