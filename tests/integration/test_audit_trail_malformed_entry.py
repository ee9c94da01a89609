"""One malformed audit entry never hides the trail (review 9, R12): `rollout audit` is what
the "outcome unknown" message sends the on-call to, so every readable entry is shown and the
bad one is shown as malformed, with its id."""

from __future__ import annotations

import json

import redis

from tests.integration.test_cli_redis import rollout


def test_the_audit_trail_survives_one_malformed_entry(redis_url: str) -> None:
    assert rollout(redis_url, "init", "f1", "--by", "me").returncode == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    bad_id = client.xadd("rollout:audit", {"feature": "f1", "time": "notatime", "action": "x"})
    assert rollout(redis_url, "set", "f1", "10", "--reason", "r", "--by", "me").returncode == 0

    done = rollout(redis_url, "audit", "f1", "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    entries = json.loads(done.stdout)
    assert [e["action"] for e in entries] == ["promote", "x", "init"]
    [bad] = [e for e in entries if e["id"] == bad_id]
    assert f"rollout:audit {bad_id} time is 'notatime'" in bad["problem"]
    assert entries[0]["old_percent"] == 0 and entries[0]["new_percent"] == 10


def test_the_audit_table_marks_the_malformed_entry(redis_url: str) -> None:
    assert rollout(redis_url, "init", "f1", "--by", "me").returncode == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd("rollout:audit", {"feature": "f1", "time": "notatime", "new_percent": "1e400"})
    done = rollout(redis_url, "audit", "f1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "malformed" in done.stdout and "'1e400'" in done.stdout
