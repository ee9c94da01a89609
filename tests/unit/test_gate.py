"""MinimalGate over fakeredis: every rule in order, the cache, outages, bad values, threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from rollout_core.bucketing import bucket, is_in_rollout
from rollout_core.interface import RolloutGate
from rollout_core.minimal_gate import MinimalGate, env_token, parse_gate_flags

GATE_LOGGER = "rollout_core.minimal_gate"
IDS = [f"user-{number}" for number in range(2_000)]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingRedis:
    """Wraps a client to count MGETs and record the keys asked for."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[list[str]] = []

    def mget(self, keys: list[str], *args: Any) -> Any:
        self.calls.append(list(keys))
        return self.client.mget(keys, *args)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server)


@pytest.fixture
def counted(redis: fakeredis.FakeRedis) -> CountingRedis:
    return CountingRedis(redis)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def environ() -> dict[str, str]:
    return {}


@pytest.fixture
def gate(counted: CountingRedis, clock: FakeClock, environ: dict[str, str]) -> MinimalGate:
    return MinimalGate(counted, cache_ttl_sec=5, max_stale_sec=60, clock=clock, environ=environ)


@pytest.fixture
def gate_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger=GATE_LOGGER):
        yield caplog


def set_flags(redis: fakeredis.FakeRedis, feature: str = "google", **values: str) -> None:
    for name, value in values.items():
        redis.set(f"flags:{feature}:{name}", value)


def share_allowed(gate: MinimalGate, feature: str = "google", **context: object) -> float:
    return sum(gate.allow(feature, {"actor_id": actor, **context}) for actor in IDS) / len(IDS)


def test_minimal_gate_is_a_rollout_gate(gate: MinimalGate) -> None:
    assert isinstance(gate, RolloutGate)


def test_an_actor_is_let_in_exactly_when_its_bucket_is_below_the_percent(
    gate: MinimalGate, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="37")
    decisions = [gate.allow("google", {"actor_id": actor}) for actor in IDS]
    assert decisions == [is_in_rollout(bucket("google", actor), 37) for actor in IDS]
    assert 0.33 < sum(decisions) / len(IDS) < 0.41


def test_the_workspace_joins_the_unit_and_user_id_stands_in_for_actor_id(
    gate: MinimalGate, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="50")
    for actor in IDS[:300]:
        expected = is_in_rollout(bucket("google", f"ws-3:{actor}"), 50)
        assert gate.allow("google", {"actor_id": actor, "workspace_id": "ws-3"}) is expected
        assert gate.allow("google", {"user_id": actor, "workspace_id": "ws-3"}) is expected
        assert gate.allow("google", {"user_id": actor}) is is_in_rollout(
            bucket("google", actor), 50
        )


def test_decimal_percents_keep_their_hundredths(
    gate: MinimalGate, redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="0.5")
    assert gate.percent("google") == 0.5
    decisions = [gate.allow("google", {"actor_id": actor}) for actor in IDS]
    assert decisions == [bucket("google", actor) < 50 for actor in IDS]


def test_the_env_hard_kill_wins_over_everything(
    gate: MinimalGate, redis: fakeredis.FakeRedis, environ: dict[str, str]
) -> None:
    set_flags(redis, rollout_percent="100", enabled="true")
    environ["PROVIDER_GOOGLE_ENABLED"] = "false"
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})
    assert not gate.allow("google", {})
    assert gate.percent("google") == 0


def test_the_env_kill_is_reread_with_the_flags_once_per_ttl(
    gate: MinimalGate, redis: fakeredis.FakeRedis, environ: dict[str, str], clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="100")
    environ["PROVIDER_GOOGLE_ENABLED"] = "false"
    assert not gate.allow("google", {"actor_id": "user-1"})
    del environ["PROVIDER_GOOGLE_ENABLED"]
    assert not gate.allow("google", {"actor_id": "user-1"})
    clock.advance(5)
    assert gate.allow("google", {"actor_id": "user-1"})


def test_the_env_kill_names_the_feature_upper_cased_with_underscores(
    gate: MinimalGate, redis: fakeredis.FakeRedis, environ: dict[str, str]
) -> None:
    assert env_token("gmail.send-v2") == "GMAIL_SEND_V2"
    set_flags(redis, "gmail.send-v2", rollout_percent="100")
    assert gate.allow("gmail.send-v2", {"actor_id": "user-1"})
    environ["PROVIDER_GMAIL_SEND_V2_ENABLED"] = "False"
    gate_with_kill = MinimalGate(redis, environ=environ)
    assert not gate_with_kill.allow("gmail.send-v2", {"actor_id": "user-1"})


def test_a_disabled_flag_says_no_and_an_absent_one_means_enabled(
    gate: MinimalGate, redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="100")
    assert gate.allow("google", {"actor_id": "user-1"})
    set_flags(redis, enabled="false")
    clock.advance(5)
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})


def test_while_internal_only_just_internal_actors_are_bucketed(
    gate: MinimalGate, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="true", rollout_percent="50")
    assert share_allowed(gate) == 0
    internal = [gate.allow("google", {"actor_id": a, "internal": True}) for a in IDS]
    assert internal == [is_in_rollout(bucket("google", a), 50) for a in IDS]


def test_internal_only_at_100_still_excludes_everyone_else(
    gate: MinimalGate, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="true", rollout_percent="100")
    assert share_allowed(gate, internal=True) == 1
    assert share_allowed(gate) == 0
    assert not gate.allow("google", {"actor_id": "user-1", "internal": "true"})


def test_once_public_internal_actors_stay_on_and_the_rest_are_bucketed(
    gate: MinimalGate, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="false", rollout_percent="0")
    assert share_allowed(gate, internal=True) == 1
    assert gate.allow("google", {"internal": True})
    assert share_allowed(gate) == 0


def test_anonymous_traffic_is_let_in_only_at_100_percent(
    gate: MinimalGate, redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="99.99")
    for anonymous in ({}, {"actor_id": None}, {"actor_id": ""}, {"workspace_id": "ws-1"}):
        assert not gate.allow("google", anonymous)
    set_flags(redis, rollout_percent="100")
    clock.advance(5)
    assert gate.allow("google", {})


def test_an_absent_percent_falls_back_to_the_environment_then_to_zero(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    with_env = MinimalGate(redis, clock=clock, environ={"FLAGS_GOOGLE_ROLLOUT_PERCENT": "100"})
    assert with_env.allow("google", {"actor_id": "user-1"})
    assert with_env.percent("google") == 100
    without_env = MinimalGate(redis, clock=clock, environ={})
    assert not without_env.allow("google", {"actor_id": "user-1"})
    assert without_env.percent("google") == 0
    set_flags(redis, rollout_percent="0")
    redis_wins = MinimalGate(redis, clock=clock, environ={"FLAGS_GOOGLE_ROLLOUT_PERCENT": "100"})
    assert not redis_wins.allow("google", {"actor_id": "user-1"})


@pytest.mark.parametrize("bad", ["abc", "150", "-1", "nan", "inf", "", "50%"])
def test_a_bad_percent_counts_as_zero_and_is_logged_once(
    gate: MinimalGate,
    redis: fakeredis.FakeRedis,
    clock: FakeClock,
    gate_log: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    set_flags(redis, rollout_percent=bad, internal_only="false")
    for _ in range(3):
        assert share_allowed(gate) == 0
        assert gate.percent("google") == 0
        clock.advance(5)
    assert [r.getMessage() for r in gate_log.records] == [
        f"flags:google:rollout_percent is {bad!r}; expected a number in 0..100; "
        "the gate fails closed until it is fixed"
    ]


def test_a_bad_percent_in_the_environment_counts_as_zero_and_is_logged_once(
    redis: fakeredis.FakeRedis, clock: FakeClock, gate_log: pytest.LogCaptureFixture
) -> None:
    gate = MinimalGate(redis, clock=clock, environ={"FLAGS_GOOGLE_ROLLOUT_PERCENT": "all"})
    for _ in range(3):
        assert not gate.allow("google", {"actor_id": "user-1"})
        clock.advance(5)
    assert len(gate_log.records) == 1
    assert "FLAGS_GOOGLE_ROLLOUT_PERCENT is 'all'" in gate_log.records[0].getMessage()


def test_bad_switches_fail_closed(gate: MinimalGate, redis: fakeredis.FakeRedis) -> None:
    set_flags(redis, rollout_percent="100", enabled="yes")
    set_flags(redis, "other", rollout_percent="100", internal_only="maybe")
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})
    assert not gate.allow("other", {"actor_id": "user-1"})
    assert gate.allow("other", {"actor_id": "user-1", "internal": True})


def test_parsing_takes_bytes_or_str_and_names_each_bad_key() -> None:
    state, problems = parse_gate_flags("google", b"true", "false", b"12.5", None)
    assert (state.enabled, state.internal_only, state.percent, problems) == (True, False, 12.5, ())
    state, problems = parse_gate_flags("google", "TRUE", b"\xff", "x", None)
    assert (state.enabled, state.internal_only, state.percent) == (False, True, 0.0)
    assert [p.key for p in problems] == [
        "flags:google:enabled",
        "flags:google:internal_only",
        "flags:google:rollout_percent",
    ]


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}])
def test_str_and_resp3_clients_work_alike(options: dict[str, Any]) -> None:
    client = fakeredis.FakeRedis(**options)
    set_flags(client, rollout_percent="37", internal_only="false", enabled="true")
    gate = MinimalGate(client, environ={})
    assert [gate.allow("google", {"actor_id": a}) for a in IDS[:200]] == [
        is_in_rollout(bucket("google", a), 37) for a in IDS[:200]
    ]


def test_one_mget_of_three_keys_per_feature_per_ttl(
    gate: MinimalGate, redis: fakeredis.FakeRedis, counted: CountingRedis, clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="0")
    assert share_allowed(gate) == 0
    assert gate.percent("google") == 0
    assert counted.calls == [
        ["flags:google:enabled", "flags:google:internal_only", "flags:google:rollout_percent"]
    ]
    set_flags(redis, rollout_percent="100")
    clock.advance(4.9)
    assert share_allowed(gate) == 0  # still the cached 0%
    clock.advance(0.1)
    assert share_allowed(gate) == 1
    share_allowed(gate, "other")
    assert len(counted.calls) == 3


def test_an_outage_serves_the_last_state_until_max_stale_then_says_no(
    gate: MinimalGate,
    redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    counted: CountingRedis,
    clock: FakeClock,
    gate_log: pytest.LogCaptureFixture,
) -> None:
    set_flags(redis, rollout_percent="100")
    assert gate.allow("google", {"actor_id": "user-1"})
    server.connected = False
    for _ in range(11):  # 55 s after the last good read
        clock.advance(5)
        assert share_allowed(gate) == 1
        assert gate.percent("google") == 100
    assert len(counted.calls) == 12  # one attempt per TTL, not one per call
    clock.advance(5)
    assert share_allowed(gate) == 0
    assert gate.percent("google") == 0
    messages = [r.getMessage() for r in gate_log.records]
    assert len(messages) == 2
    assert messages[0].startswith("Redis unreachable")
    assert "flags older than 60s; answering False" in messages[1]
    server.connected = True
    clock.advance(5)
    assert share_allowed(gate) == 1
    assert gate_log.records[-1].getMessage().startswith("Redis is reachable again")
    assert len(gate_log.records) == 3


def test_the_staleness_limit_cuts_in_even_between_refresh_attempts(
    gate: MinimalGate, redis: fakeredis.FakeRedis, server: fakeredis.FakeServer, clock: FakeClock
) -> None:
    set_flags(redis, rollout_percent="100")
    assert gate.allow("google", {"actor_id": "user-1"})
    server.connected = False
    clock.advance(59.9)
    assert gate.allow("google", {"actor_id": "user-1"})
    clock.advance(0.1)  # 60 s after the last good read, 0.1 s after the last attempt
    assert not gate.allow("google", {"actor_id": "user-1"})


def test_an_outage_before_the_first_read_says_no_without_raising(
    gate: MinimalGate, redis: fakeredis.FakeRedis, server: fakeredis.FakeServer
) -> None:
    set_flags(redis, rollout_percent="100")
    server.connected = False
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert gate.percent("google") == 0


@pytest.mark.parametrize("feature", ["Google", "google:x", "", "a b", "x" * 65, None, 7])
def test_an_invalid_feature_name_says_no_without_reading_redis(
    gate: MinimalGate,
    counted: CountingRedis,
    clock: FakeClock,
    gate_log: pytest.LogCaptureFixture,
    feature: Any,
) -> None:
    for _ in range(3):
        assert not gate.allow(feature, {"actor_id": "user-1"})
        clock.advance(5)
    assert counted.calls == []
    assert len(gate_log.records) == 1


def test_a_broken_context_or_feature_says_no_instead_of_raising(
    gate: MinimalGate, redis: fakeredis.FakeRedis, gate_log: pytest.LogCaptureFixture
) -> None:
    set_flags(redis, rollout_percent="50")
    assert not gate.allow("google", None)  # type: ignore[arg-type]
    assert not gate.allow(["google"], {"actor_id": "user-1"})  # type: ignore[arg-type]
    assert not gate.allow("google", {"actor_id": "\ud800"})
    assert gate.percent(["google"]) == 0  # type: ignore[arg-type]
    assert len(gate_log.records) == 3


def test_settings_outside_their_range_are_refused_by_name(redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="cache_ttl_sec=-1"):
        MinimalGate(redis, cache_ttl_sec=-1)


class BlockingRedis(CountingRedis):
    """An MGET that waits for the test's go-ahead once `armed`, like a slow Redis."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def mget(self, keys: list[str], *args: Any) -> Any:
        if self.armed:
            self.entered.set()
            assert self.release.wait(10), "the test never released the MGET"
        return super().mget(keys, *args)


def test_a_slow_refresh_does_not_hold_up_other_threads(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    blocking = BlockingRedis(redis)
    gate = MinimalGate(blocking, clock=clock, environ={})
    set_flags(redis, rollout_percent="100")
    assert gate.allow("google", {"actor_id": "user-1"})
    set_flags(redis, rollout_percent="0")
    clock.advance(5)
    blocking.armed = True
    refresher = threading.Thread(target=gate.allow, args=("google", {"actor_id": "user-1"}))
    refresher.start()
    assert blocking.entered.wait(10)
    assert share_allowed(gate) == 1  # served from the cache while the refresh is stuck
    blocking.release.set()
    refresher.join(10)
    assert share_allowed(gate) == 0
    assert len(blocking.calls) == 2


def test_threads_hammering_allow_through_refreshes_see_one_mget_per_ttl(
    redis: fakeredis.FakeRedis, counted: CountingRedis, clock: FakeClock
) -> None:
    gate = MinimalGate(counted, clock=clock, environ={})
    set_flags(redis, rollout_percent="37")
    expected = [is_in_rollout(bucket("google", actor), 37) for actor in IDS]
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            answers = [gate.allow("google", {"actor_id": actor}) for actor in IDS[:200]]
            if answers != expected[:200]:
                failures.append("a thread saw an answer that the 37% rollout does not give")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(50):
        clock.advance(5)
        gate.allow("google", {"actor_id": "user-0"})
    stop.set()
    for thread in threads:
        thread.join(10)
    assert failures == []
    assert 1 <= len(counted.calls) <= 51
