"""The gate's rules over fakeredis, through RolloutClient (refreshed by hand here) and the
MinimalGate wrapper: every rule in order, fail-closed values, outages, staleness, no I/O on
the request path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from rollout_core.errors import InvalidFlagValue
from rollout_core.flags import parse_percent
from rollout_core.interface import RolloutGate
from rollout_core.minimal_gate import MinimalGate, env_token
from rollout_sdk import RolloutClient
from rollout_sdk.bucketing import bucket, is_in_rollout

SDK_LOGGER = "rollout_sdk"
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
    """Wraps a client: counts every attribute the client touches and each round trip."""

    def __init__(self, client: Any, on_execute: Any = None) -> None:
        self.client = client
        self.touched = 0
        self.round_trips = 0
        self.on_execute = on_execute

    def __getattr__(self, name: str) -> Any:
        self.touched += 1
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = True) -> Any:
        self.touched += 1
        pipe = self.client.pipeline(transaction=transaction)
        execute = pipe.execute

        def counted_execute(*args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            if self.on_execute is not None:
                self.on_execute()
            return execute(*args, **kwargs)

        pipe.execute = counted_execute
        return pipe


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
def gate(counted: CountingRedis, clock: FakeClock, environ: dict[str, str]) -> RolloutClient:
    """A client without threads: the test calls refresh() where the thread would."""
    return RolloutClient(
        client=counted, refresh_interval=5, max_stale=60, clock=clock, environ=environ, start=False
    )  # type: ignore[arg-type]


@pytest.fixture
def sdk_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger=SDK_LOGGER):
        yield caplog


def set_flags(redis: Any, feature: str = "google", **values: str) -> None:
    for name, value in values.items():
        redis.set(f"flags:{feature}:{name}", value)


def loaded(gate: RolloutClient, *features: str) -> RolloutClient:
    """Read the features now, as the refresher thread would."""
    assert gate.refresh(features or ["google"])
    return gate


def share_allowed(gate: RolloutClient, feature: str = "google", **context: object) -> float:
    return sum(gate.allow(feature, {"actor_id": actor, **context}) for actor in IDS) / len(IDS)


def test_the_client_and_minimal_gate_are_rollout_gates(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    assert isinstance(gate, RolloutGate)
    minimal = MinimalGate(redis, environ={})
    assert isinstance(minimal, RolloutGate)
    minimal.close()


def test_an_actor_is_let_in_exactly_when_its_bucket_is_below_the_percent(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="37")
    loaded(gate)
    decisions = [gate.allow("google", {"actor_id": actor}) for actor in IDS]
    assert decisions == [is_in_rollout(bucket("google", actor), 37) for actor in IDS]
    assert 0.33 < sum(decisions) / len(IDS) < 0.41


def test_the_workspace_joins_the_unit_and_user_id_stands_in_for_actor_id(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="50")
    loaded(gate)
    for actor in IDS[:300]:
        expected = is_in_rollout(bucket("google", f"ws-3:{actor}"), 50)
        assert gate.allow("google", {"actor_id": actor, "workspace_id": "ws-3"}) is expected
        assert gate.allow("google", {"user_id": actor, "workspace_id": "ws-3"}) is expected
        assert gate.allow("google", {"user_id": actor}) is is_in_rollout(
            bucket("google", actor), 50
        )


def test_decimal_percents_keep_their_hundredths(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="0.5")
    loaded(gate)
    assert gate.percent("google") == 0.5
    decisions = [gate.allow("google", {"actor_id": actor}) for actor in IDS]
    assert decisions == [bucket("google", actor) < 50 for actor in IDS]


def test_the_env_hard_kill_wins_over_everything(
    gate: RolloutClient, redis: fakeredis.FakeRedis, environ: dict[str, str]
) -> None:
    set_flags(redis, rollout_percent="100", enabled="true")
    redis.hset("flags:google:overrides", "actor:user-1", "true")
    environ["PROVIDER_GOOGLE_ENABLED"] = "false"
    loaded(gate)
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})
    assert not gate.allow("google", {})
    assert gate.percent("google") == 0


@pytest.mark.parametrize("value", ["false", "disabled", "flase", "0", "off", "no", "", "tru"])
def test_any_kill_value_but_an_explicit_enable_kills_and_is_logged_once(
    gate: RolloutClient,
    redis: fakeredis.FakeRedis,
    environ: dict[str, str],
    sdk_log: pytest.LogCaptureFixture,
    value: str,
) -> None:
    set_flags(redis, rollout_percent="100")
    environ["PROVIDER_GOOGLE_ENABLED"] = value
    for _ in range(3):
        loaded(gate)
        assert not gate.allow("google", {"actor_id": "user-1"})
    messages = [record.getMessage() for record in sdk_log.records]
    assert messages == [
        f"PROVIDER_GOOGLE_ENABLED={value!r} is not an explicit enable (1, on, true, yes, any "
        "case): google is killed in this process"
    ]


@pytest.mark.parametrize("value", ["true", "TRUE", " yes ", "1", "On"])
def test_an_explicit_enable_keeps_the_feature_on(
    gate: RolloutClient, redis: fakeredis.FakeRedis, environ: dict[str, str], value: str
) -> None:
    set_flags(redis, rollout_percent="100")
    environ["PROVIDER_GOOGLE_ENABLED"] = value
    assert loaded(gate).allow("google", {"actor_id": "user-1"})


def test_the_env_kill_is_reread_with_the_flags_at_each_refresh(
    gate: RolloutClient, redis: fakeredis.FakeRedis, environ: dict[str, str]
) -> None:
    set_flags(redis, rollout_percent="100")
    environ["PROVIDER_GOOGLE_ENABLED"] = "false"
    assert not loaded(gate).allow("google", {"actor_id": "user-1"})
    del environ["PROVIDER_GOOGLE_ENABLED"]
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert loaded(gate).allow("google", {"actor_id": "user-1"})


def test_the_env_kill_names_the_feature_upper_cased_with_underscores(
    gate: RolloutClient, redis: fakeredis.FakeRedis, environ: dict[str, str]
) -> None:
    assert env_token("gmail.send-v2") == "GMAIL_SEND_V2"
    set_flags(redis, "gmail.send-v2", rollout_percent="100")
    assert loaded(gate, "gmail.send-v2").allow("gmail.send-v2", {"actor_id": "user-1"})
    environ["PROVIDER_GMAIL_SEND_V2_ENABLED"] = "False"
    assert not loaded(gate, "gmail.send-v2").allow("gmail.send-v2", {"actor_id": "user-1"})


def test_a_disabled_flag_says_no_and_an_absent_one_means_enabled(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="100")
    assert loaded(gate).allow("google", {"actor_id": "user-1"})
    set_flags(redis, enabled="false")
    loaded(gate)
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})


def test_while_internal_only_just_internal_actors_are_bucketed(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="true", rollout_percent="50")
    loaded(gate)
    assert share_allowed(gate) == 0
    internal = [gate.allow("google", {"actor_id": a, "internal": True}) for a in IDS]
    assert internal == [is_in_rollout(bucket("google", a), 50) for a in IDS]


def test_internal_only_at_100_still_excludes_everyone_else(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="true", rollout_percent="100")
    loaded(gate)
    assert share_allowed(gate, internal=True) == 1
    assert share_allowed(gate) == 0
    assert not gate.allow("google", {"actor_id": "user-1", "internal": "true"})


def test_once_public_internal_actors_stay_on_and_the_rest_are_bucketed(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, internal_only="false", rollout_percent="0")
    loaded(gate)
    assert share_allowed(gate, internal=True) == 1
    assert gate.allow("google", {"internal": True})
    assert share_allowed(gate) == 0


def test_anonymous_traffic_is_let_in_only_at_100_percent(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="99.99")
    loaded(gate)
    for anonymous in ({}, {"actor_id": None}, {"actor_id": ""}, {"workspace_id": "ws-1"}):
        assert not gate.allow("google", anonymous)
    set_flags(redis, rollout_percent="100")
    assert loaded(gate).allow("google", {})


def test_an_absent_percent_falls_back_to_the_environment_then_to_zero(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    def client(environ: dict[str, str]) -> RolloutClient:
        return loaded(RolloutClient(client=redis, clock=clock, environ=environ, start=False))

    with_env = client({"FLAGS_GOOGLE_ROLLOUT_PERCENT": "100"})
    assert with_env.allow("google", {"actor_id": "user-1"})
    assert with_env.percent("google") == 100
    without_env = client({})
    assert not without_env.allow("google", {"actor_id": "user-1"})
    assert without_env.percent("google") == 0
    set_flags(redis, rollout_percent="0")
    assert not client({"FLAGS_GOOGLE_ROLLOUT_PERCENT": "100"}).allow("google", {"actor_id": "u"})


STORE_REJECTS = ["1e1", "1_0", " 50 ", "abc", "150", "-1", "nan", "inf", "", "50%", "+5"]
# ASCII digits only: a full-width 50, an Arabic-Indic 5 and 10 (Lua's %d takes none of them)
STORE_REJECTS += [
    "\uff15\uff10",
    "\u0665",
    "1\u0660",
]  # full-width 50, Arabic-Indic 5, 10: ASCII only


@pytest.mark.parametrize("bad", STORE_REJECTS)
def test_a_percent_the_store_rejects_serves_zero_and_is_logged_once(
    gate: RolloutClient, redis: fakeredis.FakeRedis, sdk_log: pytest.LogCaptureFixture, bad: str
) -> None:
    with pytest.raises(InvalidFlagValue):
        parse_percent("flags:google:rollout_percent", bad)  # the controller's own parse
    set_flags(redis, rollout_percent=bad, internal_only="false")
    for _ in range(3):
        loaded(gate)
        assert share_allowed(gate) == 0
        assert gate.percent("google") == 0
    assert [r.getMessage() for r in sdk_log.records] == [
        f"flags:google:rollout_percent is {bad!r}; expected a number from 0 to 100 such as 10 "
        "or 0.5; google serves 0% until it is fixed"
    ]


@pytest.mark.parametrize("good", ["0", "10", "10.0", "0.5", ".5", "100", "37."])
def test_a_percent_the_store_accepts_is_served_as_the_store_reads_it(
    gate: RolloutClient, redis: fakeredis.FakeRedis, good: str
) -> None:
    set_flags(redis, rollout_percent=good)
    assert loaded(gate).percent("google") == parse_percent("k", good)


def test_a_bad_percent_in_the_environment_counts_as_zero_and_is_logged_once(
    redis: fakeredis.FakeRedis, clock: FakeClock, sdk_log: pytest.LogCaptureFixture
) -> None:
    gate = RolloutClient(
        client=redis, clock=clock, environ={"FLAGS_GOOGLE_ROLLOUT_PERCENT": "all"}, start=False
    )
    for _ in range(3):
        assert not loaded(gate).allow("google", {"actor_id": "user-1"})
    assert len(sdk_log.records) == 1
    assert "FLAGS_GOOGLE_ROLLOUT_PERCENT is 'all'" in sdk_log.records[0].getMessage()


def test_bad_switches_fail_closed(gate: RolloutClient, redis: fakeredis.FakeRedis) -> None:
    set_flags(redis, rollout_percent="100", enabled="yes")
    set_flags(redis, "other", rollout_percent="100", internal_only="maybe")
    loaded(gate, "google", "other")
    assert not gate.allow("google", {"actor_id": "user-1", "internal": True})
    assert not gate.allow("other", {"actor_id": "user-1"})
    assert gate.allow("other", {"actor_id": "user-1", "internal": True})


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}, {}])
def test_str_bytes_and_resp3_clients_work_alike(options: dict[str, Any]) -> None:
    client = fakeredis.FakeRedis(**options)
    set_flags(client, rollout_percent="37", internal_only="false", enabled="true")
    client.hset("flags:google:overrides", mapping={"actor:user-1": "true"})
    gate = loaded(RolloutClient(client=client, environ={}, start=False))
    assert [gate.allow("google", {"actor_id": a}) for a in IDS[:200]] == [
        a == "user-1" or is_in_rollout(bucket("google", a), 37) for a in IDS[:200]
    ]


def test_a_refresh_reads_every_feature_and_the_registry_in_one_round_trip(
    gate: RolloutClient, redis: fakeredis.FakeRedis, counted: CountingRedis
) -> None:
    for feature in ("google", "slack", "teams"):
        set_flags(redis, feature, rollout_percent="100", internal_only="false")
        redis.hset(f"flags:{feature}:overrides", "workspace:ws-1", "false")
    redis.sadd("rollout:features", "google", "slack")
    assert gate.refresh()  # the registry: google and slack, read in a second trip when new
    assert gate.is_ready
    gate.allow("teams", {"actor_id": "user-1"})  # first seen at request time
    counted.round_trips = 0
    assert gate.refresh()
    assert counted.round_trips == 1
    for feature in ("google", "slack", "teams"):
        assert gate.allow(feature, {"actor_id": "user-1"})
        assert not gate.allow(feature, {"actor_id": "user-1", "workspace_id": "ws-1"})


def test_the_request_path_never_touches_redis(
    gate: RolloutClient, redis: fakeredis.FakeRedis, counted: CountingRedis
) -> None:
    set_flags(redis, rollout_percent="37")
    loaded(gate)
    touched = counted.touched
    for actor in IDS:
        gate.allow("google", {"actor_id": actor, "workspace_id": "ws-1"})
        gate.allow("unknown", {"actor_id": actor})
        gate.percent("google")
        gate.evaluate("google", {"actor_id": actor})
    assert counted.touched == touched


def test_a_feature_first_seen_at_request_time_says_no_and_is_fetched_by_the_refresher(
    redis: fakeredis.FakeRedis,
) -> None:
    set_flags(redis, rollout_percent="100")
    with RolloutClient(client=redis, refresh_interval=60, environ={}, subscribe=False) as gate:
        assert gate.wait_ready(5)
        assert not gate.allow("google", {"actor_id": "user-1"})  # not in the registry
        done = threading.Event()
        for _ in range(500):
            if gate.allow("google", {"actor_id": "user-1"}):
                done.set()
                break
            done.wait(0.01)
        assert done.is_set(), "the refresher never fetched the feature named by a request"


def test_an_outage_serves_the_last_state_until_max_stale_then_says_no(
    gate: RolloutClient,
    redis: fakeredis.FakeRedis,
    server: fakeredis.FakeServer,
    clock: FakeClock,
    sdk_log: pytest.LogCaptureFixture,
) -> None:
    set_flags(redis, rollout_percent="100")
    loaded(gate)
    server.connected = False
    for _ in range(11):  # 55 s after the last good read
        clock.advance(5)
        assert not gate.refresh()
        assert share_allowed(gate) == 1
        assert gate.percent("google") == 100
    clock.advance(5)
    assert share_allowed(gate) == 0
    assert gate.percent("google") == 0
    assert gate.status().stale_features == ["google"]
    assert gate.status().refresh_errors == 11
    messages = [r.getMessage() for r in sdk_log.records]
    assert len(messages) == 2
    assert messages[0].startswith("Redis read failed")
    assert "older than max_stale 60s" in messages[1]
    server.connected = True
    assert loaded(gate).allow("google", {"actor_id": "user-1"})
    assert sdk_log.records[-1].getMessage().startswith("Redis answers again")


def test_staleness_is_measured_from_before_a_slow_read(
    redis: fakeredis.FakeRedis, clock: FakeClock
) -> None:
    slow = CountingRedis(redis, on_execute=lambda: clock.advance(10))  # a read taking 10 s
    gate = RolloutClient(client=slow, max_stale=60, clock=clock, environ={}, start=False)  # type: ignore[arg-type]
    set_flags(redis, rollout_percent="100")
    read_began = clock.now
    loaded(gate)
    clock.now = read_began + 59.9
    assert gate.allow("google", {"actor_id": "user-1"})
    clock.now = read_began + 60
    assert not gate.allow("google", {"actor_id": "user-1"})


def test_an_outage_before_the_first_read_says_no_without_raising(
    gate: RolloutClient, redis: fakeredis.FakeRedis, server: fakeredis.FakeServer
) -> None:
    set_flags(redis, rollout_percent="100")
    server.connected = False
    assert not gate.refresh(["google"])
    assert not gate.allow("google", {"actor_id": "user-1"})
    assert gate.percent("google") == 0
    assert not gate.is_ready


@pytest.mark.parametrize("feature", ["Google", "google:x", "", "a b", "x" * 65, None, 7])
def test_an_invalid_feature_name_says_no_and_is_never_read(
    gate: RolloutClient,
    counted: CountingRedis,
    sdk_log: pytest.LogCaptureFixture,
    feature: Any,
) -> None:
    for _ in range(3):
        assert not gate.allow(feature, {"actor_id": "user-1"})
    gate.refresh()
    assert gate.status().features == {}
    assert len(sdk_log.records) == 1


def test_a_broken_context_or_feature_says_no_instead_of_raising(
    gate: RolloutClient, redis: fakeredis.FakeRedis, sdk_log: pytest.LogCaptureFixture
) -> None:
    set_flags(redis, rollout_percent="50")
    loaded(gate)
    assert not gate.allow("google", None)  # type: ignore[arg-type]
    assert not gate.allow(["google"], {"actor_id": "user-1"})  # type: ignore[arg-type]
    assert not gate.allow("google", {"actor_id": "\ud800"})
    assert gate.percent(["google"]) == 0  # type: ignore[arg-type]
    assert len(sdk_log.records) == 3


def test_settings_outside_their_range_are_refused_by_name(redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="cache_ttl_sec=-1"):
        MinimalGate(redis, cache_ttl_sec=-1)
    with pytest.raises(ValueError, match="refresh_interval=0"):
        RolloutClient(client=redis, refresh_interval=0)


class BlockingRedis(CountingRedis):
    """A round trip that waits for the test's go-ahead once `armed`, like a hung Redis."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, on_execute=self._block)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def _block(self) -> None:
        if self.armed:
            self.entered.set()
            assert self.release.wait(10), "the test never released the read"


def test_a_stuck_refresh_never_holds_up_a_request(redis: fakeredis.FakeRedis) -> None:
    blocking = BlockingRedis(redis)
    set_flags(redis, rollout_percent="100")
    gate = RolloutClient(client=blocking, refresh_interval=0.05, environ={}, subscribe=False)  # type: ignore[arg-type]
    try:
        gate.allow("google", {"actor_id": "user-1"})
        assert gate.wait_ready(5)
        set_flags(redis, rollout_percent="0")
        blocking.armed = True
        assert blocking.entered.wait(10)
        assert share_allowed(gate) in (0, 1)  # answered while the refresher is stuck
        assert gate.percent("google") in (0, 100)
        blocking.release.set()
    finally:
        blocking.release.set()
        gate.close()


def test_threads_hammering_allow_through_refreshes_see_consistent_answers(
    gate: RolloutClient, redis: fakeredis.FakeRedis
) -> None:
    set_flags(redis, rollout_percent="37")
    loaded(gate)
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
        gate.refresh()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert failures == []


def test_minimal_gate_wraps_a_started_client(redis: fakeredis.FakeRedis) -> None:
    set_flags(redis, rollout_percent="37")
    redis.sadd("rollout:features", "google")
    gate = MinimalGate(redis, cache_ttl_sec=5, environ={})
    try:
        assert gate.client.wait_ready(5)
        assert gate.percent("google") == 37
        assert [gate.allow("google", {"actor_id": a}) for a in IDS[:300]] == [
            is_in_rollout(bucket("google", a), 37) for a in IDS[:300]
        ]
    finally:
        gate.close()
