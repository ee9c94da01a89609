"""Segments through the installed `rollout` command and the service SDK, on a real
redis-server: init with segments, set/pause/resume/status/audit --segment, and the gate
picking each context's segment percent."""

from __future__ import annotations

import json

import pytest
import redis

from rollout_sdk import RolloutClient
from tests.integration.test_cli_redis import rollout

pytestmark = pytest.mark.integration

SEGMENTS = "eu-canary,eu-west,us-east"


def init(redis_url: str) -> None:
    done = rollout(redis_url, "init", "google", "--segment-by", "region", "--segments", SEGMENTS)
    assert done.returncode == 0, done.stderr


def test_init_writes_the_segment_keys_services_discover_without_the_config(
    redis_url: str,
) -> None:
    init(redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.get("flags:google:segment_by") == "region"
    assert client.get("flags:google:segments") == SEGMENTS
    assert client.get("flags:google:segment_fallback_percent") == "0"
    assert client.get("flags:google:segment:eu-west:rollout_percent") == "0"
    assert client.get("flags:google:segment:eu-west:paused") == "false"
    assert client.sismember("rollout:features", "google")
    assert not client.sismember("rollout:features", "google[eu-west]")
    client.close()


def test_operator_commands_act_on_one_segment(redis_url: str) -> None:
    init(redis_url)
    changed = rollout(redis_url, "set", "google", "50", "--segment", "eu-west", "--reason", "go")
    assert changed.returncode == 0, changed.stderr
    paused = rollout(redis_url, "pause", "google", "--segment", "us-east")
    assert paused.returncode == 0, paused.stderr
    unknown = rollout(redis_url, "set", "google", "50", "--segment", "mars", "--reason", "x")
    assert unknown.returncode == 2 and "eu-canary, eu-west, us-east" in unknown.stderr

    rows = json.loads(rollout(redis_url, "status", "google", "--json").stdout)
    shown = {row["feature"]: (row["percent"], row["paused"]) for row in rows}
    assert shown == {
        "google": (0, False),
        "google[eu-canary]": (0, False),
        "google[eu-west]": (50, False),
        "google[us-east]": (0, True),
    }
    one = json.loads(
        rollout(redis_url, "status", "google", "--segment", "eu-west", "--json").stdout
    )
    assert [row["feature"] for row in one] == ["google[eu-west]"]

    trail = json.loads(
        rollout(redis_url, "audit", "google", "--segment", "eu-west", "--json").stdout
    )
    assert [(e["action"], e["segment"]) for e in trail] == [
        ("promote", "eu-west"),
        ("init", "eu-west"),
    ]
    resumed = rollout(redis_url, "resume", "google", "--segment", "us-east")
    assert resumed.returncode == 0, resumed.stderr


def test_the_gate_serves_each_contexts_segment_and_the_fallback_to_the_rest(
    redis_url: str,
) -> None:
    init(redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set("flags:google:internal_only", "false")
    client.set("flags:google:segment:eu-west:rollout_percent", "100")
    client.set("flags:google:segment:us-east:rollout_percent", "50")
    gate = RolloutClient(redis_url, start=False, subscribe=False)
    assert gate.refresh()
    actors = [f"u-{n}" for n in range(400)]
    assert all(gate.allow("google", {"actor_id": a, "region": "eu-west"}) for a in actors)
    assert not any(gate.allow("google", {"actor_id": a, "region": "eu-canary"}) for a in actors)
    assert not any(gate.allow("google", {"actor_id": a}) for a in actors)  # fallback 0%
    assert not any(gate.allow("google", {"actor_id": a, "region": "mars"}) for a in actors)
    half = sum(gate.allow("google", {"actor_id": a, "region": "us-east"}) for a in actors)
    assert 150 < half < 250
    evaluation = gate.evaluate("google", {"actor_id": "u-1", "region": "eu-west"})
    assert (evaluation.value, evaluation.percent) == (True, 100)

    client.set("flags:google:segment_fallback_percent", "100")
    client.set("flags:google:paused", "true")  # pausing the controller changes no answer
    assert gate.refresh()
    assert all(gate.allow("google", {"actor_id": a, "region": "mars"}) for a in actors)
    client.set("flags:google:enabled", "false")  # the feature's switch turns every segment off
    assert gate.refresh()
    assert not any(gate.allow("google", {"actor_id": a, "region": "eu-west"}) for a in actors)
    gate.close()
    client.close()


def test_one_refresh_is_one_round_trip_once_the_segments_are_known(redis_url: str) -> None:
    init(redis_url)
    gate = RolloutClient(redis_url, start=False, subscribe=False)
    assert gate.refresh(["google"])  # learns the segment list (a second read, once)
    sent = []
    original = gate._redis.pipeline

    def counting(*args: object, **kwargs: object) -> object:
        sent.append(1)
        return original(*args, **kwargs)

    gate._redis.pipeline = counting  # type: ignore[method-assign]
    assert gate.refresh(["google"])
    assert len(sent) == 1
    gate.close()
