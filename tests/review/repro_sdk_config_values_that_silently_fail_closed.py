"""RolloutClient accepts settings that leave it serving nothing, with no error at construction:

- refresh_interval=math.inf (a natural "push only, never poll") or any value over ~9.2e9 s:
  the refresher thread dies at once with OverflowError in SimpleQueue.get(timeout=...); change
  notices pile up unread and every feature fails closed once max_stale passes, for good.
- max_stale=0: every answer is False forever (state is stale the instant it is read).
- max_stale < refresh_interval (e.g. 60 and 120): each state expires before the next poll,
  so the client fails closed for half of every interval while Redis is healthy.

    .venv/bin/python tests/review/repro_sdk_config_values_that_silently_fail_closed.py
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import redis

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import redis_server, verdict


def main() -> int:
    server = redis_server()
    try:
        env = {**os.environ, "REDIS_URL": server.url}
        for args in (["init", "google"], ["audience", "google", "public", "--reason", "r"],
                     ["set", "google", "100", "--reason", "r"]):  # fmt: skip
            subprocess.run([".venv/bin/rollout", *args], env=env, check=True, capture_output=True)
        raw = redis.Redis.from_url(server.url)
        results = []
        for interval, stale in ((math.inf, 2.0), (1e10, 2.0), (5.0, 0.0), (1.0, 0.5)):
            client = RolloutClient(
                server.url, refresh_interval=interval, max_stale=stale, environ={}
            )
            ready = client.wait_ready(3)
            time.sleep(0.2)
            raw.publish("rollout:changes", "google")
            time.sleep(2.5)
            alive = all(thread.is_alive() for thread in client._threads)
            results.append(
                f"refresh_interval={interval:g} max_stale={stale:g}: ready={ready} "
                f"refresher alive={alive} percent now={client.percent('google')}"
            )
            client.close()
        print("\n".join(results))
        return verdict(
            all("percent now=100.0" in line for line in results),
            "; ".join(results),
            "either the constructor refuses these values with a message that names them, or "
            "the client keeps serving 100% while Redis is healthy",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
