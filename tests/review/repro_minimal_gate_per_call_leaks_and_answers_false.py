"""MinimalGate "keeps working" for existing callers, but its contract changed under them:

- a gate built and asked at once (a script, a job, a handler that builds its gate per call, as
  the seed's cheap on-demand gate allowed) answers False for a feature at 100%: the first
  answer no longer reads Redis, it waits for a background thread nobody waits for;
- each MinimalGate starts two threads (refresher, subscriber) and a pub/sub connection that
  nothing stops (no close() in the seed's API callers, no finaliser; the threads keep the
  client alive), so per-call gates leak threads, and the subscriptions take connections from
  the CALLER's redis-py pool until the service's own Redis calls fail with
  MaxConnectionsError("Too many connections").

    .venv/bin/python tests/review/repro_minimal_gate_per_call_leaks_and_answers_false.py
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time

import redis

sys.path.insert(0, os.getcwd())
from rollout_core.minimal_gate import MinimalGate
from tests.review._support import redis_server, verdict


def handler(client: redis.Redis) -> bool:
    gate = MinimalGate(client)  # the seed's usage: cheap, on demand
    return gate.allow("google", {"actor_id": "dana"})


def main() -> int:
    server = redis_server()
    try:
        env = {**os.environ, "REDIS_URL": server.url}
        for args in (["init", "google"], ["audience", "google", "public", "--reason", "r"],
                     ["set", "google", "100", "--reason", "r"]):  # fmt: skip
            subprocess.run([".venv/bin/rollout", *args], env=env, check=True, capture_output=True)
        client = redis.Redis.from_url(server.url)
        threads_before = threading.active_count()
        answers = [handler(client) for _ in range(200)]
        gc.collect()
        time.sleep(2)
        threads_after = threading.active_count()
        try:
            connections: object = client.info("clients")["connected_clients"]
        except redis.RedisError as error:  # the service's own client starved by the gates
            connections = f"the caller's own client fails: {type(error).__name__}: {error}"
        return verdict(
            all(answers) and threads_after - threads_before < 10,
            f"{answers.count(True)} of 200 calls at 100% answered True; threads "
            f"{threads_before} -> {threads_after}; Redis connected_clients {connections}",
            "the seed's callers keep their answers (True at 100%) and resources stay bounded; "
            "the caller's own Redis client keeps working",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
