"""The flag store where it meets the decision and the operator (issue 9 items 4, 5, 7, 9, 11;
issue 10 items 1, 2), on fakeredis with Lua. The same cases run on a real redis-server in
tests/integration/test_flag_store_seams_redis.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import redis

from rollout_core.errors import FlagStoreError, InvalidFlagValue
from rollout_core.flags import (
    AUDIT_STREAM,
    LAST_WRITE_HASH,
    RECOMMENDATIONS_HASH,
    FeatureNotInitialised,
    RedisFlagStore,
    parse_flag_state,
)
from rollout_core.model import Action, FlagState
from rollout_core.ports import FlagChange
from rollout_sdk.keys import FEATURES_REGISTRY

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> Iterator[fakeredis.FakeRedis]:
    fake = fakeredis.FakeRedis(server=server, decode_responses=True)
    yield fake
    server.connected = True
    fake.flushall()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> RedisFlagStore:
    store = RedisFlagStore(client)
    store.init("google", AT)
    return store


def entries(client: fakeredis.FakeRedis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(AUDIT_STREAM)]


def flag_values(client: fakeredis.FakeRedis) -> dict[str, str]:
    return {key: client.get(key) for key in client.keys("flags:google:*")}


def promotion(state: FlagState, new: float = 10, dry_run: bool = False) -> FlagChange:
    return FlagChange(
        state.feature,
        state.percent,
        state.paused,
        new,
        "canary healthy",
        "controller",
        AT,
        Action.PROMOTE,
        dry_run,
        expected_raw=state.raw,
    )


# 9.4: keys only promotions need never make the feature an error


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_percent", "fifty"),
        ("last_change_time", "yesterday"),
        ("last_rollback_time", "soon"),
        ("internal_only", "maybe"),
    ],
)
def test_a_corrupt_history_key_is_a_problem_not_an_error(field: str, value: str) -> None:
    raw = {"rollout_percent": "50", field: value}
    state = parse_flag_state("google", raw)
    assert state.percent == 50
    assert len(state.problems) == 1
    assert state.problems[0].startswith(f"flags:google:{field} is {value!r}; expected")


@pytest.mark.parametrize("field", ["rollout_percent", "enabled", "paused"])
def test_a_corrupt_key_a_rollback_needs_is_an_invalid_flag_value(field: str) -> None:
    with pytest.raises(InvalidFlagValue, match=f"flags:google:{field} is 'x'"):
        parse_flag_state("google", {"rollout_percent": "50", field: "x"})


def test_the_state_keeps_the_raw_strings_it_was_parsed_from(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    client.set("flags:google:rollout_percent", "10.0")
    state = store.read(["google"])["google"]
    assert state.raw_value("rollout_percent") == "10.0"
    assert state.raw_value("last_change_time") is None
    assert dict(state.raw)["internal_only"] == "true"


# 9.5: the compare-and-set compares every key the decision read


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("enabled", "false"),
        ("internal_only", "false"),
        ("paused", "true"),
        ("rollout_percent", "10.0"),  # the same number, but not what was read
        ("last_change_time", "2025-10-08T14:00:00Z"),
        ("last_percent", "0"),
        ("last_rollback_time", "2025-10-08T14:00:00Z"),
    ],
)
def test_any_key_changed_between_read_and_write_is_a_conflict_and_nothing_is_written(
    store: RedisFlagStore, client: fakeredis.FakeRedis, key: str, value: str
) -> None:
    state = store.read(["google"])["google"]
    client.set(f"flags:google:{key}", value)
    before = flag_values(client)
    count = len(entries(client))

    result = store.apply(promotion(state))

    assert result.conflict and not result.applied
    assert f"flags:google:{key} changed since it was read" in result.message
    assert flag_values(client) == before and len(entries(client)) == count


def test_a_key_deleted_between_read_and_write_is_a_conflict(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    state = store.read(["google"])["google"]
    client.delete("flags:google:enabled")
    assert store.apply(promotion(state)).conflict


def test_an_unchanged_flag_is_written_with_its_history(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    result = store.apply(promotion(store.read(["google"])["google"]))
    assert result.applied and client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_percent") == "0"


# 9.7: the audience


def test_switching_an_absent_audience_to_public_is_a_no_op(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    client.delete("flags:google:internal_only")
    client.set("flags:google:rollout_percent", "50")
    count = len(entries(client))
    result = store.set_audience("google", False, "go public", "alice", AT)
    assert not result.is_change and result.audit_id is None
    assert client.get("flags:google:rollout_percent") == "50"
    assert client.get("flags:google:internal_only") is None
    assert len(entries(client)) == count


def test_switching_an_absent_audience_to_internal_resets_the_percent(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    client.delete("flags:google:internal_only")
    client.set("flags:google:rollout_percent", "50")
    result = store.set_audience("google", True, "back to staff", "alice", AT)
    assert result.written == ("internal_only", "rollout_percent")
    assert client.get("flags:google:rollout_percent") == "0"


# 9.9: a corrupt percent can be repaired


def test_set_repairs_a_corrupt_percent_and_audits_the_old_raw_value(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    client.set("flags:google:rollout_percent", "1e1")
    result = store.set_percent("google", 0, "repair", "alice", at=AT)
    assert result.applied and client.get("flags:google:rollout_percent") == "0"
    assert entries(client)[-1]["old_percent"] == "1e1"
    assert client.get("flags:google:last_percent") is None


def test_set_over_a_corrupt_percent_that_changed_again_is_a_conflict(
    store: RedisFlagStore, client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.set("flags:google:rollout_percent", "abc")
    real_apply = store.apply

    def raced(change: FlagChange) -> Any:
        client.set("flags:google:rollout_percent", "abd")
        return real_apply(change)

    monkeypatch.setattr(store, "apply", raced)
    assert store.set_percent("google", 0, "repair", "alice", at=AT).conflict
    assert client.get("flags:google:rollout_percent") == "abd"


# 9.11: retention and recommendations


def test_an_unchanged_recommendation_is_not_appended_again(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    state = store.read(["google"])["google"]
    first = store.apply(promotion(state, dry_run=True))
    again = store.apply(promotion(state, dry_run=True))
    changed = store.apply(promotion(state, new=50, dry_run=True))
    recommendations = [e for e in entries(client) if e["dry_run"] == "true"]
    assert [e["new_percent"] for e in recommendations] == ["10", "50"]
    assert first.audit_id is not None and again.audit_id is None
    assert changed.audit_id is not None
    assert client.hget(RECOMMENDATIONS_HASH, "google") == "promote 0 50"
    assert client.get("flags:google:rollout_percent") == "0"  # a dry run writes no flag key


def test_a_live_change_forgets_the_last_recommendation(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    state = store.read(["google"])["google"]
    store.apply(promotion(state, dry_run=True))
    store.apply(promotion(state))
    assert client.hget(RECOMMENDATIONS_HASH, "google") is None


def test_audit_retention_must_be_a_positive_whole_number(client: fakeredis.FakeRedis) -> None:
    with pytest.raises(Exception, match="audit retention 0 is invalid"):
        RedisFlagStore(client, audit_retention=0)
    assert RedisFlagStore(client, audit_retention=50).audit_retention == 50


# 10.1: no write to a feature that is not initialised


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.set_percent("googel", 0, "incident", "alice", at=AT),
        lambda s: s.set_paused("googel", True, "incident", "alice", AT),
        lambda s: s.set_paused("googel", False, "incident", "alice", AT),
        lambda s: s.set_audience("googel", False, "go public", "alice", AT),
        lambda s: s.apply(
            FlagChange("googel", 50, False, 0, "x", "controller", AT, Action.ROLLBACK)
        ),
    ],
)
def test_every_write_path_refuses_a_feature_that_is_not_initialised(
    store: RedisFlagStore, client: fakeredis.FakeRedis, write: Any
) -> None:
    keys = sorted(client.keys("*"))
    count = len(entries(client))
    with pytest.raises(FeatureNotInitialised) as error:
        write(store)
    assert str(error.value) == (
        "feature 'googel' is not initialised (flags:googel:rollout_percent is absent); "
        "known: google; run `rollout init googel` if it is new"
    )
    assert sorted(client.keys("*")) == keys and len(entries(client)) == count


def test_apply_many_gives_a_feature_that_is_not_initialised_its_error_in_its_place(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    state = store.read(["google"])["google"]
    stray = FlagChange("googel", 0, False, 10, "x", "controller", AT, Action.PROMOTE)
    google, googel = store.apply_many([promotion(state), stray])
    assert not isinstance(google, Exception) and google.applied
    assert isinstance(googel, FeatureNotInitialised)


# 11 (SDK prerequisites): the registry


def test_every_write_registers_the_feature_and_known_features_reads_the_registry(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    store.init("slack", AT)
    assert client.smembers(FEATURES_REGISTRY) == {"google", "slack"}
    client.set("flags:jira:rollout_percent", "0")  # a stray key, not registered
    assert store.known_features() == ["google", "slack"]


def test_known_features_falls_back_to_scan_and_the_first_write_fills_the_registry(
    client: fakeredis.FakeRedis,
) -> None:
    client.set("flags:google:rollout_percent", "0")  # initialised before the registry
    client.set("flags:slack:rollout_percent", "10")
    store = RedisFlagStore(client)
    assert store.known_features() == ["google", "slack"]
    store.init("jira", AT)
    assert client.smembers(FEATURES_REGISTRY) == {"google", "slack", "jira"}


# 10.2: a lost reply is read back, never resent


def lose_reply_after(store: RedisFlagStore, attribute: str, outage: Any = None) -> list[int]:
    """Make the store's script run, then fail as if its reply was lost; count the calls."""
    script = getattr(store, attribute)
    calls: list[int] = []

    def run_then_lose(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        script(*args, **kwargs)
        if outage is not None:
            outage()
        raise redis.ConnectionError("Connection closed by server.")

    setattr(store, attribute, run_then_lose)
    return calls


def test_a_lost_reply_of_an_applied_change_is_read_back_as_applied(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    calls = lose_reply_after(store, "_cas")
    result = store.set_percent("google", 10, "canary", "alice", at=AT)
    assert calls == [1]  # never resent
    assert result.applied and result.recovered and not result.conflict
    assert result.audit_id == client.xrange(AUDIT_STREAM)[-1][0]
    write_id = entries(client)[-1]["write_id"]
    assert client.hget(LAST_WRITE_HASH, "google") == f"{write_id} {result.audit_id}"


def test_a_lost_connection_before_the_script_ran_is_read_back_as_not_applied(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    def lost(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("Connection reset by peer")

    store._cas = lost  # type: ignore[method-assign]
    with pytest.raises(FlagStoreError, match="not applied, nothing written"):
        store.set_percent("google", 10, "canary", "alice", at=AT)
    assert client.get("flags:google:rollout_percent") == "0"


def test_while_redis_stays_unreachable_the_outcome_is_unknown_and_says_how_to_check(
    store: RedisFlagStore, server: fakeredis.FakeServer
) -> None:
    lose_reply_after(store, "_cas", outage=lambda: setattr(server, "connected", False))
    result = store.set_percent("google", 10, "canary", "alice", at=AT)
    assert result.unknown and not result.applied and not result.conflict
    assert "outcome unknown" in result.message
    assert "`rollout audit google`" in result.message


def test_a_lost_reply_of_a_pause_is_read_back_as_written(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    calls = lose_reply_after(store, "_audited_write")
    result = store.set_paused("google", True, "incident", "alice", AT)
    assert calls == [1] and result.recovered and result.written == ("paused",)
    assert result.audit_id == client.xrange(AUDIT_STREAM)[-1][0]


def test_a_read_back_finds_its_write_in_the_stream_after_a_later_write(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    def run_then_lose_after_another_write(*args: Any, **kwargs: Any) -> Any:
        script(*args, **kwargs)
        client.hset(LAST_WRITE_HASH, "google", "someone-else 0-1")
        raise redis.TimeoutError("Timeout reading from socket")

    script = store._cas
    store._cas = run_then_lose_after_another_write  # type: ignore[method-assign]
    result = store.set_percent("google", 10, "canary", "alice", at=AT)
    assert result.applied and result.audit_id == client.xrange(AUDIT_STREAM)[-1][0]


def test_writes_go_through_a_client_without_retries(store: RedisFlagStore) -> None:
    writer = store._writer
    assert writer is not store.client
    connection = writer.connection_pool.get_connection()
    try:
        assert connection.retry.get_retries() == 0
    finally:
        writer.connection_pool.release(connection)


def test_apply_many_reads_back_every_change_after_a_lost_reply(
    store: RedisFlagStore, client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.init("slack", AT)
    states = store.read(["google", "slack"])
    real_pipeline = store._writer.pipeline

    def losing_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        def execute_then_lose(*a: Any, **k: Any) -> Any:
            execute(*a, **k)
            raise redis.ConnectionError("Connection closed by server.")

        pipe.execute = execute_then_lose
        return pipe

    monkeypatch.setattr(store._writer, "pipeline", losing_pipeline)
    google, slack = store.apply_many([promotion(states["google"]), promotion(states["slack"])])
    assert not isinstance(google, Exception) and google.applied and google.recovered
    assert not isinstance(slack, Exception) and slack.applied and slack.recovered
    assert client.get("flags:slack:rollout_percent") == "10"


def test_the_write_id_is_recorded_in_the_audit_entry(
    store: RedisFlagStore, client: fakeredis.FakeRedis
) -> None:
    store.set_paused("google", True, "incident", "alice", AT + timedelta(minutes=1))
    (entry_id, fields) = client.xrange(AUDIT_STREAM)[-1]
    assert re.fullmatch(r"[0-9a-f]{32}@\d{13}", fields["write_id"])  # id@deadline (ms)
    assert client.hget(LAST_WRITE_HASH, "google") == f"{fields['write_id']} {entry_id}"
