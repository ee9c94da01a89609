"""`rollout override` against a real redis-server: audited with its change notice in one
script, refused for a feature that is not initialised, and served by RolloutClient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rollout_sdk import TARGETING_MATCH, RolloutClient
from rollout_sdk.bucketing import bucket

pytestmark = pytest.mark.integration
ROLLOUT = Path(sys.executable).with_name("rollout")


def rollout(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url}
    return subprocess.run(
        [str(ROLLOUT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def flags(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_an_override_is_audited_announced_and_served(redis_url: str, flags: redis.Redis) -> None:
    assert rollout(redis_url, "init", "google").returncode == 0
    flags.set("flags:google:internal_only", "false")
    notices = flags.pubsub()
    notices.subscribe("rollout:changes")
    assert notices.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    with RolloutClient(redis_url, refresh_interval=60, environ={}) as client:
        client.allow("google", {"actor_id": "someone"})
        assert not client.allow("google", {"actor_id": "dana", "workspace_id": "acme"})  # 0%
        done = rollout(
            redis_url,
            *("override", "google", "--workspace", "acme", "--on"),
            *("--reason", "beta", "--by", "dana-sre"),
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "google: workspace acme override none -> on (audited)"
        assert flags.hgetall("flags:google:overrides") == {"workspace:acme": "true"}
        message = notices.get_message(timeout=5)
        assert message is not None and message["data"] == "google"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not client.allow(
            "google", {"actor_id": "d", "workspace_id": "acme"}
        ):
            time.sleep(0.01)
        answer = client.evaluate("google", {"actor_id": "dana", "workspace_id": "acme"})
        assert (answer.value, answer.reason) == (True, TARGETING_MATCH)
        assert not client.allow("google", {"actor_id": "dana", "workspace_id": "other"})
    *_, entry = flags.xrange("rollout:audit")
    assert entry[1] == {
        "time": entry[1]["time"],
        "feature": "google",
        "old_percent": "0",
        "new_percent": "0",
        "reason": "workspace acme on: beta",
        "by": "dana-sre",
        "dry_run": "false",
        "action": "override",
        "write_id": entry[1]["write_id"],
    }
    # the write id is what a lost reply is read back by
    assert flags.hget("rollout:last_write", "google") == f"{entry[1]['write_id']} {entry[0]}"
    notices.close()


def test_an_actor_override_is_cleared_and_listed(redis_url: str, flags: redis.Redis) -> None:
    assert rollout(redis_url, "init", "google").returncode == 0
    args = ("override", "google", "--actor", "u-1")
    assert rollout(redis_url, *args, "--off", "--reason", "vip").returncode == 0
    assert (
        rollout(
            redis_url, "override", "google", "--workspace", "w-9", "--on", "--reason", "b"
        ).returncode
        == 0
    )
    listed = rollout(redis_url, "override", "google")
    assert listed.stdout.splitlines() == [
        "google: 2 override(s)",
        "  workspace w-9: on",
        "  actor u-1: off",
    ]
    again = rollout(redis_url, *args, "--off", "--reason", "vip")
    assert again.stdout.strip() == "google: actor u-1 override is already off; nothing written"
    cleared = rollout(redis_url, *args, "--clear", "--reason", "done")
    assert cleared.stdout.strip() == "google: actor u-1 override off -> none (audited)"
    assert flags.hgetall("flags:google:overrides") == {"workspace:w-9": "true"}
    actions = [body["action"] for _, body in flags.xrange("rollout:audit")]
    assert actions == ["init", "override", "override", "override"]


def test_a_feature_that_is_not_initialised_is_refused_and_nothing_is_written(
    redis_url: str, flags: redis.Redis
) -> None:
    done = rollout(redis_url, "override", "google", "--workspace", "acme", "--on", "--reason", "x")
    assert done.returncode == 2
    assert (
        "feature 'google' is not initialised" in done.stderr
        and "rollout init google" in done.stderr
    )
    assert flags.keys("*") == []


@pytest.mark.parametrize(
    "args",
    [
        ("--workspace", "acme", "--on"),  # no reason
        ("--workspace", "acme", "--actor", "a", "--on", "--reason", "x"),
        ("--workspace", "acme", "--on", "--off", "--reason", "x"),
        ("--on", "--reason", "x"),
        ("--workspace", "has space", "--on", "--reason", "x"),
    ],
)
def test_bad_override_input_exits_2_and_writes_nothing(
    redis_url: str, flags: redis.Redis, args: tuple[str, ...]
) -> None:
    assert rollout(redis_url, "init", "google").returncode == 0
    entries = flags.xlen("rollout:audit")
    done = rollout(redis_url, "override", "google", *args)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: ")
    assert flags.xlen("rollout:audit") == entries
    assert not flags.exists("flags:google:overrides")


def test_an_override_changes_one_unit_and_leaves_the_buckets_of_others(
    redis_url: str, flags: redis.Redis
) -> None:
    assert rollout(redis_url, "init", "google").returncode == 0
    flags.mset({"flags:google:internal_only": "false", "flags:google:rollout_percent": "50"})
    outside = next(a for a in (f"u{n}" for n in range(100)) if bucket("google", a) >= 5000)
    assert (
        rollout(
            redis_url, "override", "google", "--actor", outside, "--on", "--reason", "x"
        ).returncode
        == 0
    )
    client = RolloutClient(redis_url, environ={}, start=False)
    assert client.refresh(["google"])
    assert client.allow("google", {"actor_id": outside})
    others = [f"x{n}" for n in range(500)]
    assert [client.allow("google", {"actor_id": a}) for a in others] == [
        bucket("google", a) < 5000 for a in others
    ]
    client.close()


def test_status_lists_each_features_overrides(redis_url: str, flags: redis.Redis) -> None:
    assert rollout(redis_url, "init", "google").returncode == 0
    assert rollout(redis_url, "init", "quiet").returncode == 0
    for target in (("--workspace", "acme", "--on"), ("--actor", "u-1", "--off")):
        done = rollout(redis_url, "override", "google", *target, "--reason", "beta")
        assert done.returncode == 0, done.stderr
    flags.hset("flags:google:overrides", "team:x", "true")  # a field no service reads

    listed = rollout(redis_url, "status", "--json")

    assert listed.returncode == 0, listed.stderr
    rows = {row["feature"]: row["overrides"] for row in json.loads(listed.stdout)}
    assert rows == {
        "google": [
            {"kind": "workspace", "id": "acme", "on": True},
            {"kind": "actor", "id": "u-1", "on": False},
        ],
        "quiet": [],
    }
    assert "ignored override" in listed.stderr and "team:x" in listed.stderr
    table = rollout(redis_url, "status", "google")
    assert "workspace acme on, actor u-1 off" in table.stdout


def test_an_overrides_key_written_as_a_string_fails_only_its_own_feature(
    redis_url: str, flags: redis.Redis
) -> None:
    for feature in ("google", "gmail"):
        assert rollout(redis_url, "init", feature).returncode == 0
        flags.mset({f"flags:{feature}:internal_only": "false"})
    flags.set("flags:gmail:rollout_percent", "30")
    flags.set("flags:google:rollout_percent", "50")
    flags.set("flags:google:overrides", "actor:dana=true")  # a redis-cli slip: SET, not HSET

    with RolloutClient(redis_url, refresh_interval=0.2, max_stale=60, environ={}) as client:
        assert client.wait_ready(5)
        assert client.refresh() is True
        gmail, google = client.percent("gmail"), client.percent("google")
        last_error = client.status().last_error
        dana = client.evaluate("google", {"actor_id": "dana"})
    listed = rollout(redis_url, "status", "--json")

    assert (gmail, google, last_error) == (30.0, 50.0, None)
    assert dana.reason != TARGETING_MATCH  # the unreadable override is not applied
    assert listed.returncode == 0, listed.stderr
    rows = {row["feature"]: row for row in json.loads(listed.stdout)}
    assert rows["google"]["overrides"] == [] and rows["gmail"]["overrides"] == []
    assert "flags:google:overrides cannot be read as a hash" in listed.stderr


def test_a_registry_written_as_a_string_keeps_the_known_features(
    redis_url: str, flags: redis.Redis
) -> None:
    assert rollout(redis_url, "init", "gmail").returncode == 0
    flags.mset({"flags:gmail:internal_only": "false", "flags:gmail:rollout_percent": "30"})

    with RolloutClient(redis_url, refresh_interval=0.2, max_stale=60, environ={}) as client:
        assert client.wait_ready(5)
        flags.delete("rollout:features")
        flags.set("rollout:features", "google gmail")
        assert client.refresh() is True
        assert client.percent("gmail") == 30.0
        assert client.status().last_error is None
