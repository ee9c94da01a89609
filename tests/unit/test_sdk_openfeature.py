"""RolloutProvider through the OpenFeature SDK client: the targeting key is the actor, the
reasons and the percent come through, status events follow the client's health."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import fakeredis
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus

from rollout_sdk import RolloutClient
from rollout_sdk.bucketing import bucket
from rollout_sdk.openfeature import RolloutProvider


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.01)
    return check()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(server: fakeredis.FakeServer, clock: FakeClock) -> Iterator[RolloutProvider]:
    redis = fakeredis.FakeRedis(server=server)
    redis.mset({"flags:google:internal_only": "false", "flags:google:rollout_percent": "37"})
    redis.hset("flags:google:overrides", "workspace:acme", "true")
    client = RolloutClient(client=redis, environ={}, clock=clock, max_stale=60, start=False)
    client.refresh()
    client.refresh(["google"])
    provider = RolloutProvider(client)
    api.set_provider_and_wait(provider)
    yield provider
    api.shutdown()


def test_boolean_flags_resolve_with_reason_variant_and_percent(provider: RolloutProvider) -> None:
    flags = api.get_client()
    inside = next(f"u{n}" for n in range(100) if bucket("google", f"u{n}") < 3700)
    outside = next(f"u{n}" for n in range(100) if bucket("google", f"u{n}") >= 3700)
    details = flags.get_boolean_details("google", False, EvaluationContext(inside))
    assert (details.value, details.reason, details.variant) == (True, "SPLIT", "on")
    assert details.flag_metadata == {"percent": 37.0}
    assert not flags.get_boolean_value("google", False, EvaluationContext(outside))
    in_acme = EvaluationContext(outside, {"workspace_id": "acme"})
    details = flags.get_boolean_details("google", False, in_acme)
    assert (details.value, details.reason) == (True, "TARGETING_MATCH")
    internal = flags.get_boolean_details(
        "google", False, EvaluationContext(outside, {"internal": True})
    )
    assert (internal.value, internal.reason) == (True, "TARGETING_MATCH")


def test_other_flag_types_are_a_type_mismatch(provider: RolloutProvider) -> None:
    details = api.get_client().get_string_details("google", "x", EvaluationContext("u1"))
    assert (details.value, details.error_code) == ("x", ErrorCode.TYPE_MISMATCH)


def test_status_events_follow_the_client_health(
    provider: RolloutProvider, server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    events: list[ProviderEvent] = []
    for event in (
        ProviderEvent.PROVIDER_STALE,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_READY,
    ):
        api.add_handler(event, lambda details, e=event: events.append(e))
    flags = api.get_client()
    assert eventually(lambda: events == [ProviderEvent.PROVIDER_READY])  # the provider is ready
    events.clear()
    server.connected = False
    provider.client.refresh()
    assert flags.get_provider_status() == ProviderStatus.STALE
    clock.now += 60
    provider.client.refresh()
    details = flags.get_boolean_details("google", True, EvaluationContext("u1"))
    assert (details.value, details.reason) == (False, "STALE")
    server.connected = True
    provider.client.refresh()
    expected = [
        ProviderEvent.PROVIDER_STALE,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_READY,
    ]
    assert eventually(lambda: events == expected), events  # handlers run in OpenFeature's pool
    assert flags.get_provider_status() == ProviderStatus.READY


def test_a_feature_not_loaded_yet_is_an_error_and_the_default(provider: RolloutProvider) -> None:
    details = api.get_client().get_boolean_details("slack", False, EvaluationContext("u1"))
    assert (details.value, details.reason, details.error_code) == (
        False,
        "ERROR",
        ErrorCode.PROVIDER_NOT_READY,
    )


def test_a_provider_whose_client_never_reads_is_not_ready() -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    client = RolloutClient(client=fakeredis.FakeRedis(server=server), environ={}, start=False)
    with pytest.raises(Exception, match=r"no flags read from Redis within 0\.1 s"):
        api.set_provider_and_wait(RolloutProvider(client, ready_timeout=0.1))
    api.shutdown()
