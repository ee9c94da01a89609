"""Three readers of a percent disagree:

1. Python's `\\d` (rollout_sdk.flag_values) takes Unicode digits; the Lua scripts' `%d` does
   not. After `redis-cli SET flags:google:rollout_percent ٥٠` (Arabic-Indic 50), the gate
   serves 50% and `rollout set google 20` audits "50% -> 20%", but the script calls the old
   value a typo and does not record last_percent: `rollout status` then says "from 7%" (an
   older value), a history that never happened.
2. The store accepts a percent finer than the gate's 0.01% buckets: `rollout set google 0.004`
   reports 0.004% (status and `percent()` too) while `allow()` lets nobody in.

    .venv/bin/python tests/review/repro_percent_grammar_drift_between_python_lua_and_gate.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import redis

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import redis_server, verdict


def main() -> int:
    server = redis_server()
    env = {**os.environ, "REDIS_URL": server.url}

    def rollout(*args: str) -> str:
        done = subprocess.run([".venv/bin/rollout", *args], env=env, capture_output=True, text=True)
        return (done.stdout + done.stderr).strip()

    try:
        rollout("init", "google")
        rollout("audience", "google", "public", "--reason", "r")
        rollout("set", "google", "7", "--reason", "r")
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        raw.set("flags:google:rollout_percent", "\u0665\u0660")  # ٥٠
        set_output = rollout("set", "google", "20", "--reason", "r")
        last = raw.get("flags:google:last_percent")
        print(set_output, "| last_percent", last)
        rollout("set", "google", "0.004", "--reason", "r")
        with RolloutClient(server.url, environ={}) as client:
            client.wait_ready(5)
            let_in = sum(client.allow("google", {"actor_id": f"u{i}"}) for i in range(200_000))
            served = client.percent("google")
        return verdict(
            last == "50" and (served == 0 or let_in > 0),
            f"after ٥٠ -> 20: '{set_output}' but last_percent={last!r}; at 0.004%: percent()="
            f"{served} while {let_in} of 200,000 actors let in",
            "one grammar everywhere (ASCII digits, as the Lua and the docs say) so ٥٠ is a typo "
            "in the gate too; a percent the gate cannot serve refused by the store",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
