"""One wrong-typed key (a feature's overrides hash, or the registry, written as a string by a
redis-cli slip) makes every RolloutClient fail closed on EVERY feature after max_stale, and
`rollout status` fail, although state.py says "a bad override is ignored".

    .venv/bin/python tests/review/repro_wrongtype_key_blacks_out_every_feature.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import eventually, redis_server, verdict


def main() -> int:
    server = redis_server()
    try:
        env = {**os.environ, "REDIS_URL": server.url}
        for feature, percent in (("google", "50"), ("gmail", "30")):
            subprocess.run([".venv/bin/rollout", "init", feature], env=env, check=True)
            subprocess.run(
                [".venv/bin/rollout", "set", feature, percent, "--reason", "r"], env=env, check=True
            )
            subprocess.run(
                [".venv/bin/rollout", "audience", feature, "public", "--reason", "r"], env=env
            )
            subprocess.run(
                [".venv/bin/rollout", "set", feature, percent, "--reason", "r"], env=env, check=True
            )
        raw = redis.Redis.from_url(server.url)
        client = RolloutClient(server.url, refresh_interval=0.2, max_stale=2, environ={})
        assert client.wait_ready(5)
        before = client.percent("gmail")
        # the slip: an operator "sets an override" on google with a plain SET
        raw.set("flags:google:overrides", "actor:dana=true")
        time.sleep(3)
        after = client.percent("gmail")
        status = subprocess.run([".venv/bin/rollout", "status"], env=env, capture_output=True)
        raw.delete("flags:google:overrides")
        eventually(lambda: client.percent("gmail") == 30, 10)
        raw.delete("rollout:features")
        raw.set("rollout:features", "google gmail")
        time.sleep(3)
        after_registry = client.percent("gmail")
        client.close()
        return verdict(
            after == before and after_registry == before and status.returncode == 0,
            f"gmail served {before}% before; {after}% after flags:google:overrides became a string "
            f"(last_error={client.status().last_error!r}); {after_registry}% after the registry "
            f"became a string; `rollout status` exit {status.returncode}: "
            f"{status.stderr.decode().strip()[:160]}",
            "a corrupt key of one feature fails closed for that feature only (the overrides "
            "ignored and named, as state.py says); gmail keeps 30%; status shows the rest",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
