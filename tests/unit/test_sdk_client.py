"""RolloutClient over fakeredis: override precedence, reasons, allow and evaluate agreeing,
health changes, life cycle, and what `import rollout_sdk` pulls in."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
from typing import Any

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout_sdk import (
    DEFAULT,
    DISABLED,
    ERROR,
    SPLIT,
    STALE,
    TARGETING_MATCH,
    RolloutClient,
)
from rollout_sdk.bucketing import bucket
from rollout_sdk.state import parse_overrides


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def client_over(redis: Any, **options: Any) -> RolloutClient:
    options.setdefault("environ", {})
    return RolloutClient(client=redis, start=False, **options)


def flags(redis: Any, feature: str = "google", **values: str) -> None:
    redis.mset({f"flags:{feature}:{name}": value for name, value in values.items()})


def test_precedence_is_kill_then_disabled_then_override_then_audience_then_percent(
    redis: fakeredis.FakeRedis,
) -> None:
    environ: dict[str, str] = {}
    client = client_over(redis, environ=environ)
    flags(redis, enabled="true", internal_only="true", rollout_percent="0")
    redis.hset("flags:google:overrides", mapping={"workspace:acme": "true", "actor:bo": "false"})
    client.refresh(["google"])
    dana = {"actor_id": "dana", "workspace_id": "acme"}
    bo = {"actor_id": "bo", "workspace_id": "acme", "internal": True}
    assert client.evaluate("google", dana) == (True, TARGETING_MATCH, 0.0, None)  # beats audience
    assert client.evaluate("google", bo) == (False, TARGETING_MATCH, 0.0, None)  # actor first
    assert client.evaluate("google", {"actor_id": "cy"}) == (False, TARGETING_MATCH, 0.0, None)
    flags(redis, internal_only="false", rollout_percent="100")
    client.refresh(["google"])
    assert not client.allow("google", bo)  # the off override beats the 100%
    flags(redis, enabled="false")
    client.refresh(["google"])
    assert client.evaluate("google", dana) == (False, DISABLED, 0.0, None)
    flags(redis, enabled="true")
    environ["PROVIDER_GOOGLE_ENABLED"] = "false"
    client.refresh(["google"])
    value, reason, percent, error = client.evaluate("google", dana)
    assert (value, reason, percent) == (False, DISABLED, 0.0)
    assert error is not None and "PROVIDER_GOOGLE_ENABLED='false'" in error


def test_each_reason_names_what_decided(redis: fakeredis.FakeRedis) -> None:
    clock = FakeClock()
    client = client_over(redis, clock=clock, max_stale=60)
    actor = next(f"u{n}" for n in range(100) if bucket("google", f"u{n}") < 3700)
    assert client.evaluate("google", {"actor_id": actor}).reason == ERROR  # not loaded yet
    client.refresh(["google"])
    assert client.evaluate("google", {"actor_id": actor}) == (False, DEFAULT, 0.0, None)
    flags(redis, internal_only="false", rollout_percent="37")
    client.refresh(["google"])
    assert client.evaluate("google", {"actor_id": actor}) == (True, SPLIT, 37.0, None)
    assert client.evaluate("google", {"actor_id": actor, "internal": True}).reason == (
        TARGETING_MATCH  # internal actors stay on once public
    )
    flags(redis, rollout_percent="1e1")
    client.refresh(["google"])
    value, reason, percent, error = client.evaluate("google", {"actor_id": actor})
    assert (value, reason, percent) == (False, ERROR, 0.0)
    assert error is not None and "flags:google:rollout_percent is '1e1'" in error
    clock.now += 60
    assert client.evaluate("google", {"actor_id": actor}).reason == STALE


contexts = st.fixed_dictionaries(
    {},
    optional={
        "actor_id": st.sampled_from(["a", "b", "", None, 7, "dana"]),
        "user_id": st.sampled_from(["a", "c", None]),
        "workspace_id": st.sampled_from(["acme", "", None, "w2"]),
        "internal": st.sampled_from([True, False, "true", None]),
    },
)
raw_states = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.sampled_from(["true", "false", "yes"]),
        "internal_only": st.sampled_from(["true", "false", "maybe"]),
        "rollout_percent": st.sampled_from(["0", "0.01", "37", "50", "100", "1e1", "x"]),
    },
)
override_maps = st.dictionaries(
    st.sampled_from(["actor:a", "actor:dana", "workspace:acme", "workspace:w2", "bad"]),
    st.sampled_from(["true", "false", "on"]),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(raw=raw_states, overrides=override_maps, context=contexts, killed=st.booleans())
def test_allow_and_evaluate_always_agree(
    raw: dict[str, str], overrides: dict[str, str], context: dict[str, object], killed: bool
) -> None:
    redis = fakeredis.FakeRedis()
    if raw:
        flags(redis, **raw)
    if overrides:
        redis.hset("flags:google:overrides", mapping=overrides)  # type: ignore[arg-type]
    environ = {"PROVIDER_GOOGLE_ENABLED": "off"} if killed else {}
    client = client_over(redis, environ=environ)
    client.refresh(["google"])
    evaluation = client.evaluate("google", context)
    assert client.allow("google", context) is evaluation.value
    assert client.percent("google") == evaluation.percent or evaluation.reason == STALE
    if killed or raw.get("enabled") == "false":
        assert evaluation.value is False


def test_a_bad_override_is_ignored_and_named() -> None:
    overrides = parse_overrides(
        "google", {"workspace:acme": "on", "team:x": "true", "actor:": "true", "actor:a": "false"}
    )
    assert (dict(overrides.actors), dict(overrides.workspaces)) == ({"a": False}, {})
    assert len(overrides.problems) == 3
    assert "flags:google:overrides field 'workspace:acme' = 'on'" in overrides.problems[0]


def test_health_changes_reach_listeners_once_each(redis: fakeredis.FakeRedis) -> None:
    server = fakeredis.FakeServer()
    down_able = fakeredis.FakeRedis(server=server)
    clock = FakeClock()
    client = client_over(down_able, clock=clock, max_stale=60)
    seen: list[str] = []
    client.add_listener(lambda health, message: seen.append(health))
    server.connected = False
    client.refresh()
    assert seen == ["error"]  # nothing was ever read
    server.connected = True
    client.refresh()
    client.refresh()
    server.connected = False
    client.refresh()
    clock.now += 30
    client.refresh()
    clock.now += 30
    client.refresh()
    server.connected = True
    client.refresh()
    assert seen == ["error", "ready", "stale", "error", "ready"]


def test_close_stops_both_threads_and_a_closed_client_cannot_restart(
    redis: fakeredis.FakeRedis,
) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    with RolloutClient(client=redis, refresh_interval=0.05, environ={}) as client:
        assert client.wait_ready(5)
        started = [t for t in threading.enumerate() if t.ident not in before]
        assert sorted(t.name for t in started) == ["rollout-listen", "rollout-run"]
    assert not any(thread.is_alive() for thread in started)
    with pytest.raises(RuntimeError, match="closed"):
        client.start()


def test_a_change_notice_is_applied_without_waiting_for_the_poll(
    redis: fakeredis.FakeRedis,
) -> None:
    flags(redis, rollout_percent="10")
    redis.sadd("rollout:features", "google")
    with RolloutClient(client=redis, refresh_interval=600, max_stale=6000, environ={}) as client:
        assert client.wait_ready(5)
        assert client.percent("google") == 10
        flags(redis, rollout_percent="20")
        done = threading.Event()
        for _ in range(500):  # the listener subscribes in its thread: notify until seen
            redis.publish("rollout:changes", "google")
            if client.percent("google") == 20:
                done.set()
                break
            done.wait(0.01)
        assert done.is_set()


def test_import_rollout_sdk_loads_no_heavy_dependency() -> None:
    code = (
        "import json, sys; import rollout_sdk, rollout_sdk.client, rollout_sdk.state; "
        "heavy = ['pydantic', 'yaml', 'pandas', 'prefect', 'matplotlib', 'prometheus_client', "
        "'openfeature', 'rollout_core']; "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    ("refresh_interval", "max_stale", "named"),
    [
        (math.inf, 60.0, "refresh_interval=inf"),
        (1e10, 2e10, "refresh_interval=10000000000.0"),
        (math.nan, 60.0, "refresh_interval=nan"),
        (0.0, 60.0, "refresh_interval=0.0"),
        (5.0, 0.0, "max_stale=0.0"),
        (120.0, 60.0, "max_stale=60.0"),
        (1.0, 0.5, "max_stale=0.5"),
        (5.0, math.nan, "max_stale=nan"),
    ],
)
def test_timing_that_would_fail_closed_while_redis_is_healthy_is_refused_naming_the_value(
    refresh_interval: float, max_stale: float, named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        RolloutClient(
            client=fakeredis.FakeRedis(),
            refresh_interval=refresh_interval,
            max_stale=max_stale,
            start=False,
        )


def test_names_asked_for_outside_the_registry_are_bounded_and_logged_once_in_aggregate(
    redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    from rollout_sdk.client import MAX_UNKNOWN_FEATURES

    flags(redis, "google", enabled="true", internal_only="false", rollout_percent="100")
    redis.sadd("rollout:features", "google")
    client = client_over(redis)
    assert client.refresh()
    caplog.set_level("WARNING", logger="rollout_sdk")

    for number in range(MAX_UNKNOWN_FEATURES + 500):
        assert client.allow(f"tenant-{number}", {"actor_id": "a"}) is False
        assert client.allow(f"Tenant-{number}", {"actor_id": "a"}) is False  # invalid
    assert client.refresh()

    assert len(client.status().features) == MAX_UNKNOWN_FEATURES + 1  # google stays
    assert client.allow("google", {"actor_id": "a"}) is True
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "'Tenant-0' is invalid" in warnings[0]
    assert f"'tenant-{MAX_UNKNOWN_FEATURES}' and any further one answer False" in warnings[1]


def test_a_read_that_fails_after_close_logs_nothing_though_one_before_close_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="rollout_sdk")
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    flags(redis, "google", enabled="true", internal_only="false", rollout_percent="100")
    open_client, closed_client = client_over(redis), client_over(redis)
    assert open_client.refresh() and closed_client.refresh()
    server.connected = False  # every command now raises ConnectionError
    closed_client.close()  # as when a refresh outlives close()'s wait for the thread

    assert closed_client.refresh() is False
    assert caplog.records == []
    assert open_client.refresh() is False
    assert [r.getMessage()[:17] for r in caplog.records] == ["Redis read failed"]
    open_client.close()
