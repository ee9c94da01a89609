"""Every distinct feature name a service asks about stays in the client for good:

- an invalid name (e.g. built from input: "Checkout-V2", an id with a slash) adds a key to
  `_logged` and writes one WARNING line from the request thread, per distinct name;
- a valid but unknown name joins `_states`, costs a wake-up and a Redis read, and is then read
  by every refresh forever (3 MGET keys and one HGETALL each).

So 50,000 distinct names (a name built from a tenant or an experiment id) leave 50,000 log
lines, 50,000 entries the client never drops, and a refresh that reads 200,000 keys.

    .venv/bin/python tests/review/repro_sdk_unbounded_growth_from_unknown_feature_names.py
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import redis_server, verdict


def main() -> int:
    server = redis_server()
    sink = io.StringIO()
    logging.getLogger("rollout_sdk").addHandler(logging.StreamHandler(sink))
    try:
        with RolloutClient(server.url, refresh_interval=1, environ={}) as client:
            client.wait_ready(5)
            for number in range(50_000):
                client.allow(f"Tenant-{number}", {"actor_id": "a"})  # invalid: upper case
                client.allow(f"tenant-{number}", {"actor_id": "a"})  # valid, never initialised
            time.sleep(3)
            lines = sink.getvalue().count("\n")
            logged, states = len(client._logged), len(client._states)
        return verdict(
            lines < 100 and states < 1_000,
            f"{lines} WARNING lines written from request threads; {logged} remembered log keys;"
            f" {states} features read by every refresh",
            "a bounded set (invalid names logged once in aggregate, unknown names dropped "
            "or capped when they are not in the registry)",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
