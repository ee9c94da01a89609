"""A stray non-UTF-8 byte in a flag key is a corrupt value of that key (review 9, R2): never a
UnicodeDecodeError out of the pass or a traceback from the CLI, and the compare-and-set
compares it exactly, so a rollback over a corrupt history key is not a perpetual conflict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.errors import InvalidFlagValue
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW, one_pass, ratio_spec, seed

ROLLOUT = Path(sys.executable).parent / "rollout"

TWO = parse_config(
    """
features:
  f1:
    slos: [{name: error_rate, ratio: {errors: 'vector(0)', total: 'vector(2000)'}, max: 0.01}]
  f2:
    slos: [{name: error_rate, ratio: {errors: 'vector(400)', total: 'vector(2000)'}, max: 0.01}]
"""
).select(None)


def _seed_two(client: redis.Redis) -> None:
    client.flushdb()
    for feature, percent in (("f1", "10"), ("f2", "100")):
        client.mset(
            {
                f"flags:{feature}:enabled": "true",
                f"flags:{feature}:internal_only": "false",
                f"flags:{feature}:rollout_percent": percent,
                f"flags:{feature}:paused": "false",
            }
        )


def _rollout(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROLLOUT), *args],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_binary_history_value_of_one_feature_does_not_block_anothers_rollback(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:last_percent", b"\xff")
    store = RedisFlagStore(connect(redis_url))
    outcomes = run_pass(TWO, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)
    assert raw.get("flags:f2:rollout_percent") == b"10", outcomes["f2"].summary


def test_a_rollback_over_a_binary_history_key_of_its_own_is_applied(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    raw = redis.Redis.from_url(redis_url)
    seed(redis.Redis.from_url(redis_url, decode_responses=True), "100")
    raw.set("flags:f1:last_change_time", b"\xff\xfe")
    outcome = one_pass(redis_url, prometheus.url, ratio_spec("vector(400)", "vector(2000)"))
    assert raw.get("flags:f1:rollout_percent") == b"10", outcome.summary
    assert outcome.percent == 10.0


def test_a_binary_percent_is_an_invalid_flag_value_naming_the_key(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:rollout_percent", b"5\xff")
    states = RedisFlagStore(connect(redis_url)).read_each(["f1", "f2"])
    assert isinstance(states["f1"], InvalidFlagValue)
    assert "flags:f1:rollout_percent" in str(states["f1"])
    assert not isinstance(states["f2"], InvalidFlagValue)


def test_rollout_pause_over_a_binary_percent_reports_what_it_wrote(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:rollout_percent", b"\xff")
    done = _rollout(redis_url, "pause", "f1", "--reason", "x", "--by", "me")
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-400:]
    assert done.returncode == 0 and raw.get("flags:f1:paused") == b"true"


@pytest.mark.parametrize("command", [("status",), ("status", "f1"), ("audit", "f1")])
def test_rollout_reads_a_binary_percent_without_a_traceback(
    redis_url: str, command: tuple[str, ...]
) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:rollout_percent", b"\xff")
    _rollout(redis_url, "pause", "f1", "--reason", "x", "--by", "me")  # audits the raw old value
    done = _rollout(redis_url, *command)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-400:]


def test_rollout_set_repairs_a_binary_percent_and_audits_the_old_bytes(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:rollout_percent", b"\xff")
    done = _rollout(redis_url, "set", "f1", "0", "--reason", "repair", "--by", "me")
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-400:]
    assert done.returncode == 0, done.stdout + done.stderr
    assert raw.get("flags:f1:rollout_percent") == b"0"
    [entry] = [body for _, body in raw.xrange("rollout:audit") if body[b"feature"] == b"f1"]
    assert entry[b"old_percent"] == b"\xff"


def test_a_binary_percent_is_named_as_bytes_that_are_not_utf8(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.set("flags:f1:rollout_percent", b"5\xff")
    state = RedisFlagStore(connect(redis_url)).read_each(["f1"])["f1"]
    assert "flags:f1:rollout_percent is b'5\\xff' (not UTF-8)" in str(state)


def test_rollout_audit_shows_an_entry_whose_fields_are_not_utf8(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(raw)
    raw.xadd(
        "rollout:audit",
        {
            b"time": b"2026-11-30T05:00:00Z",
            b"feature": b"f1",
            b"reason": b"bad \xff byte",
            b"by": b"\xfe",
            b"action": b"promote",
            b"new_percent": b"\xff",
        },
    )
    done = subprocess.run(
        [str(ROLLOUT), "audit", "f1"],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bad byte" in done.stdout
