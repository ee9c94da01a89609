"""The flag store on fakeredis (with Lua): strict parsing, compare-and-set, audited writes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest

from rollout_core.audit import read_audit
from rollout_core.errors import ConfigError, FlagStoreError, InvalidFeatureName, InvalidFlagValue
from rollout_core.flags import (
    AUDIT_STREAM,
    FeatureNotInitialised,
    RedisFlagStore,
    format_percent_value,
    format_time,
    parse_bool,
    parse_percent,
    parse_time,
)
from rollout_core.model import Action
from rollout_core.ports import FlagChange
from rollout_core.redis_connection import connect
from rollout_core.urls import redact_url

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)


class CountingRedis(fakeredis.FakeRedis):
    """A fake Redis that counts the commands sent, to prove one round trip per read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]))
        return super().execute_command(*args, **options)


@pytest.fixture
def client() -> Iterator[CountingRedis]:
    fake = CountingRedis(decode_responses=True)
    yield fake
    fake.flushall()


@pytest.fixture
def store(client: CountingRedis) -> RedisFlagStore:
    return RedisFlagStore(client)


def change(
    expected: float | None, new: float, paused: bool = False, dry_run: bool = False
) -> FlagChange:
    action = Action.PROMOTE if new > (expected or 0) else Action.ROLLBACK
    return FlagChange("google", expected, paused, new, "test", "controller", AT, action, dry_run)


def audit_entries(client: fakeredis.FakeRedis) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(AUDIT_STREAM)]


@pytest.mark.parametrize(("raw", "expected"), [("10", 10.0), ("0.5", 0.5), ("100", 100.0)])
def test_percent_parses_plain_decimals(raw: str, expected: float) -> None:
    assert parse_percent("k", raw) == expected


@pytest.mark.parametrize(
    "raw", ["abc", "nan", "inf", "-1", "150", "1e1", "1_0", "", " 10", " 50 ", "10%"]
)
def test_percent_that_is_not_a_decimal_in_range_names_key_value_and_expectation(raw: str) -> None:
    with pytest.raises(InvalidFlagValue) as error:
        parse_percent("flags:google:rollout_percent", raw)
    assert error.value.key == "flags:google:rollout_percent"
    assert error.value.value == raw
    assert "0 to 100" in str(error.value)


@pytest.mark.parametrize("raw", ["True", "1", "yes", ""])
def test_booleans_are_only_true_or_false(raw: str) -> None:
    with pytest.raises(InvalidFlagValue, match='expected "true" or "false"'):
        parse_bool("flags:google:paused", raw)


def test_times_are_read_in_utc_whatever_their_offset() -> None:
    assert parse_time("k", "2025-10-08T15:00:00Z") == AT
    assert parse_time("k", "2025-10-08T17:00:00+02:00") == AT
    assert parse_time("k", "2025-10-08T15:00:00") == AT  # no offset: taken as UTC


@pytest.mark.parametrize("raw", ["yesterday", "1728399600", "2025-10-08"])
def test_a_time_that_is_not_iso_8601_is_refused(raw: str) -> None:
    with pytest.raises(InvalidFlagValue, match="ISO-8601"):
        parse_time("flags:google:last_change_time", raw)


def test_percents_are_written_canonically() -> None:
    assert [format_percent_value(p) for p in (10.0, 0.5, 100, 0, 1e-5)] == [
        "10",
        "0.5",
        "100",
        "0",
        "0.00001",
    ]
    assert format_time(datetime(2025, 10, 8, 17, 0, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-10-08T15:00:00Z"
    )


@pytest.mark.parametrize("percent", [float("nan"), float("inf"), -1, 101])
def test_a_percent_outside_0_to_100_is_never_written(percent: float) -> None:
    with pytest.raises(ConfigError, match="0 to 100"):
        format_percent_value(percent)


def test_an_absent_feature_reads_as_uninitialised_and_enabled(store: RedisFlagStore) -> None:
    state = store.read(["google"])["google"]
    assert (state.exists, state.percent, state.enabled, state.internal_only) == (
        False,
        0,
        True,
        False,
    )


def test_operator_plain_sets_are_read(store: RedisFlagStore, client: CountingRedis) -> None:
    client.set("flags:google:rollout_percent", "10.0")
    client.set("flags:google:paused", "true")
    client.set("flags:google:last_change_time", "2025-10-08T15:00:00Z")
    state = store.read(["google"])["google"]
    assert (state.percent, state.paused, state.last_change_time) == (10.0, True, AT)


def test_every_feature_is_read_in_one_round_trip(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.commands.clear()
    store.read(["google", "slack", "jira"])
    assert client.commands == ["MGET"]


def test_read_names_the_bad_key_and_read_each_keeps_other_features(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:slack:rollout_percent", "abc")
    client.set("flags:google:rollout_percent", "50")
    with pytest.raises(InvalidFlagValue, match=r"flags:slack:rollout_percent is 'abc'"):
        store.read(["google", "slack"])
    states = store.read_each(["google", "slack"])
    assert not isinstance(states["google"], Exception) and states["google"].percent == 50
    assert isinstance(states["slack"], InvalidFlagValue)


def test_a_feature_name_that_could_inject_keys_is_refused_before_redis(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.commands.clear()
    with pytest.raises(InvalidFeatureName):
        store.read(["google:paused"])
    assert client.commands == []


def test_apply_writes_percent_history_and_audit_together(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    store.init("google", AT)
    result = store.apply(change(0, 10))
    assert (result.applied, result.conflict, result.current_percent) == (True, False, 10)
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_percent") == "0"
    assert client.get("flags:google:last_change_time") == "2025-10-08T15:00:00Z"
    assert client.get("flags:google:last_rollback_time") is None  # an increase
    entry = audit_entries(client)[-1]
    assert re.fullmatch(r"[0-9a-f]{32}@\d{13}", entry.pop("write_id"))  # id@deadline (ms)
    assert entry == {
        "time": "2025-10-08T15:00:00Z",
        "feature": "google",
        "old_percent": "0",
        "new_percent": "10",
        "reason": "test",
        "by": "controller",
        "dry_run": "false",
        "action": "promote",
    }
    assert result.audit_id == client.xrange(AUDIT_STREAM)[-1][0]


def test_a_decrease_records_the_rollback_time(store: RedisFlagStore, client: CountingRedis) -> None:
    client.set("flags:google:rollout_percent", "50")
    assert store.apply(change(50, 10)).applied
    assert client.get("flags:google:last_rollback_time") == "2025-10-08T15:00:00Z"


def test_apply_writes_nothing_when_the_percent_changed_since_it_was_read(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "50")
    result = store.apply(change(10, 100))
    assert (result.applied, result.conflict, result.current_percent) == (False, True, 50)
    assert client.get("flags:google:rollout_percent") == "50"
    assert client.get("flags:google:last_change_time") is None
    assert audit_entries(client) == []


def test_apply_writes_nothing_when_the_feature_was_paused_since_it_was_read(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "10")
    client.set("flags:google:paused", "true")
    result = store.apply(change(10, 50, paused=False))
    assert (result.applied, result.conflict, result.current_paused) == (False, True, True)
    assert client.get("flags:google:rollout_percent") == "10"


def test_apply_to_an_uninitialised_feature_writes_nothing_and_names_the_known_ones(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    store.init("google", AT)
    before = len(audit_entries(client))
    with pytest.raises(FeatureNotInitialised, match=r"'googel' is not initialised.*known: google"):
        store.apply(FlagChange("googel", None, False, 10, "t", "controller", AT, Action.PROMOTE))
    assert client.get("flags:googel:rollout_percent") is None
    assert len(audit_entries(client)) == before


def test_an_operators_ten_point_zero_matches_the_ten_the_controller_read(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "10.0")
    assert store.apply(change(10, 50)).applied


def test_dry_run_only_appends_a_recommendation(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "10")
    result = store.apply(change(10, 50, dry_run=True))
    assert (result.applied, result.conflict, result.current_percent) == (False, False, 10)
    assert result.audit_id is not None
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_change_time") is None
    assert audit_entries(client)[-1]["dry_run"] == "true"


def test_apply_many_keeps_each_change_atomic_and_independent(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "0")
    client.set("flags:gmail:rollout_percent", "50")  # moved since it was read as 10
    client.set("flags:slack:rollout_percent", "10")
    client.set("flags:slack:last_change_time", "not a time")  # an operator's typo

    def to(feature: str, expected: float, new: float) -> FlagChange:
        return FlagChange(feature, expected, False, new, "t", "controller", AT, Action.PROMOTE)

    google, gmail, slack = store.apply_many(
        [to("google", 0, 10), to("gmail", 10, 50), to("slack", 10, 50)]
    )

    assert not isinstance(google, Exception) and google.applied
    assert not isinstance(gmail, Exception) and gmail.conflict and gmail.current_percent == 50
    assert not isinstance(slack, Exception) and slack.applied  # the script never parses times
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:gmail:rollout_percent") == "50"
    assert [e["feature"] for e in audit_entries(client)] == ["google", "slack"]
    assert store.apply_many([]) == []


def test_apply_many_reports_a_failed_script_in_its_place(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "0")
    client.set(AUDIT_STREAM, "not a stream")

    (result,) = store.apply_many([change(0, 10)])

    assert isinstance(result, FlagStoreError) and "not a stream" in str(result)
    assert client.get("flags:google:rollout_percent") == "0"


def test_a_stream_key_of_the_wrong_type_fails_before_any_write(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "10")
    client.set(AUDIT_STREAM, "not a stream")
    with pytest.raises(FlagStoreError, match="not a stream"):
        store.apply(change(10, 50))
    assert client.get("flags:google:rollout_percent") == "10"
    assert client.get("flags:google:last_change_time") is None


def test_init_seeds_an_internal_only_feature_at_zero_once(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    first = store.init("google", AT)
    second = store.init("google", AT)
    assert first.written == ("enabled", "internal_only", "rollout_percent", "paused")
    assert not second.is_change and second.audit_id is None
    assert store.read(["google"])["google"].internal_only is True
    assert [entry["action"] for entry in audit_entries(client)] == ["init"]


def test_init_never_overwrites_what_an_operator_already_set(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "50")
    client.set("flags:google:internal_only", "false")
    result = store.init("google", AT)
    assert result.written == ("enabled", "paused")
    assert client.get("flags:google:rollout_percent") == "50"
    assert client.get("flags:google:internal_only") == "false"


def test_audience_switch_resets_the_percent_to_zero_with_history(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    store.init("google", AT)
    store.set_percent("google", 50, "internal looks good", at=AT)
    later = AT + timedelta(minutes=5)
    result = store.set_audience("google", False, "go public", "alice", later)
    assert (result.old_percent, result.new_percent) == (50, 0)
    state = store.read(["google"])["google"]
    assert (state.internal_only, state.percent, state.last_percent) == (False, 0, 50)
    assert state.last_change_time == later
    assert audit_entries(client)[-1]["action"] == "audience"


def test_switching_to_the_audience_already_set_changes_nothing(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    store.init("google", AT)
    store.set_percent("google", 10, "canary", at=AT)
    result = store.set_audience("google", True, "again", "alice", AT)
    assert not result.is_change
    assert client.get("flags:google:rollout_percent") == "10"


def test_pause_and_resume_are_audited_once_each(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    store.init("google", AT)
    assert store.set_paused("google", True, "incident", "alice", AT).is_change
    assert not store.set_paused("google", True, "incident", "alice", AT).is_change
    assert store.set_paused("google", False, "fixed", "alice", AT).is_change
    actions = [(e["action"], e["by"]) for e in audit_entries(client)]
    assert actions == [("init", "manual"), ("pause", "alice"), ("resume", "alice")]


def test_a_manual_decrease_goes_through_the_cas_as_an_audited_rollback(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "50")
    result = store.set_percent("google", 0.5, "errors in logs", at=AT)
    assert result.applied and client.get("flags:google:rollout_percent") == "0.5"
    entry = audit_entries(client)[-1]
    assert (entry["action"], entry["by"], entry["old_percent"]) == ("rollback", "manual", "50")


def test_a_manual_set_to_the_current_percent_writes_nothing(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "10")
    result = store.set_percent("google", 10, "again", at=AT)
    assert not result.applied and not result.conflict and result.audit_id is None
    assert audit_entries(client) == []


def test_known_features_are_those_with_a_percent_key(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "0")
    client.set("flags:slack:rollout_percent", "5")
    client.set("flags:jira:paused", "true")
    client.set("flags:Bad Name:rollout_percent", "5")
    assert store.known_features() == ["google", "slack"]


def test_an_outage_is_a_flag_store_error_with_advice() -> None:
    server = fakeredis.FakeServer()
    store = RedisFlagStore(fakeredis.FakeRedis(server=server, decode_responses=True))
    server.connected = False
    with pytest.raises(FlagStoreError, match="check REDIS_URL"):
        store.read(["google"])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("redis://alice:hunter2@host:6379/1", "redis://alice:****@host:6379/1"),
        ("redis://hunter2@host:6379/0", "redis://****@host:6379/0"),
        ("redis://host:6379/0?password=hunter2", "redis://host:6379/0?password=****"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_connect_takes_the_url_and_keeps_retries_and_timeouts_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/9")  # never read: the caller passes it
    client = connect("redis://:hunter2@127.0.0.1:6390/2")
    settings = client.connection_pool.connection_kwargs
    assert (settings["port"], settings["db"], settings["password"]) == (6390, 2, "hunter2")
    assert settings["socket_connect_timeout"] <= 2 and settings["socket_timeout"] <= 5
    assert settings["retry"].get_retries() <= 3


def test_a_url_that_is_not_redis_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as error:
        connect("http://:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in str(error.value) and "****" in str(error.value)


def test_pausing_a_feature_with_a_garbled_percent_still_pauses_and_stays_auditable(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "ten")
    result = store.set_paused("google", True, "incident", "alice", AT)
    assert result.is_change and result.old_percent is None
    assert client.get("flags:google:paused") == "true"
    assert read_audit(client, "google")[0].action == "pause"


def test_an_audience_switch_never_copies_a_garbled_percent_into_last_percent(
    store: RedisFlagStore, client: CountingRedis
) -> None:
    client.set("flags:google:rollout_percent", "ten")
    client.set("flags:google:internal_only", "true")
    store.set_audience("google", False, "go public", "alice", AT)
    assert client.get("flags:google:rollout_percent") == "0"
    assert client.get("flags:google:last_percent") is None
