"""FAILING REPRO (review 9, defect R3): one non-UTF-8 byte in any flag key stops everything.

Every client is `decode_responses=True` and `RedisFlagStore._call` catches only RedisError,
so `redis-cli SET flags:f1:last_percent $'\\xff'` (a history key, which item 4 says holds
promotions only) makes the pass's one MGET raise UnicodeDecodeError out of `run_pass`
(the flow's read_flags task crashes): EVERY feature of the run is blocked, including another
feature's rollback on a breach with evidence (I2). The CLI fails the same way: `rollout status`
and `rollout set` (the repair path of item 9) print a traceback, and `rollout pause` writes the
pause and its audit entry, then crashes with exit 1, so the operator believes it failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis

from deployments.servers import RunningServer
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.one_feature import NOW

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
    for feature, percent in (("f1", "10"), ("f2", "100")):
        client.mset(
            {
                f"flags:{feature}:enabled": "true",
                f"flags:{feature}:internal_only": "false",
                f"flags:{feature}:rollout_percent": percent,
                f"flags:{feature}:paused": "false",
            }
        )


def test_a_binary_history_value_of_one_feature_does_not_block_anothers_rollback(
    redis_url: str, prometheus_factory
) -> None:
    prometheus: RunningServer = prometheus_factory()
    raw = redis.Redis.from_url(redis_url)
    _seed_two(redis.Redis.from_url(redis_url, decode_responses=True))
    raw.set("flags:f1:last_percent", b"\xff")  # a history key of the OTHER feature
    store = RedisFlagStore(connect(redis_url))
    # observed: UnicodeDecodeError raised out of run_pass; f2 stays at 100% under 20% errors
    outcomes = run_pass(TWO, store, PrometheusSource(prometheus.url, timeout=3), NOW, False)
    assert raw.get("flags:f2:rollout_percent") == b"10", outcomes["f2"].summary


def test_rollout_pause_over_a_binary_percent_reports_what_it_wrote(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    _seed_two(redis.Redis.from_url(redis_url, decode_responses=True))
    raw.set("flags:f1:rollout_percent", b"\xff")
    done = subprocess.run(
        [str(ROLLOUT), "pause", "f1", "--reason", "x", "--by", "me"],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # observed: exit 1 with a UnicodeDecodeError traceback, yet paused is "true" and audited
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-400:]
    assert (done.returncode == 0) == (raw.get("flags:f1:paused") == b"true")
