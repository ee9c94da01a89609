"""Feature names may hold '.', '-' and '_' (FEATURE_NAME_PATTERN), but the environment names
fold all three to '_': `gmail.send`, `gmail-send` and `gmail_send` share
PROVIDER_GMAIL_SEND_ENABLED and FLAGS_GMAIL_SEND_ROLLOUT_PERCENT. The hard kill of one kills
the others; the fallback percent meant for one is served by another whose Redis key is absent
(a feature never initialised serves 100% instead of failing closed). Nothing warns, and
`rollout init` accepts the colliding names.

    .venv/bin/python tests/review/repro_env_variable_names_collide_across_features.py
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import redis_server, verdict


def main() -> int:
    server = redis_server()
    try:
        env = {**os.environ, "REDIS_URL": server.url}
        init = [
            subprocess.run([".venv/bin/rollout", "init", name], env=env, capture_output=True)
            for name in ("gmail.send", "gmail-send")
        ]
        environ = {"FLAGS_GMAIL_SEND_ROLLOUT_PERCENT": "100"}  # meant for gmail_send's bootstrap
        with RolloutClient(server.url, environ=environ) as client:
            client.wait_ready(5)
            client.refresh(["gmail_send", "gmail.send"])
            served = client.evaluate("gmail_send", {"actor_id": "a", "internal": True})
        killed = {"PROVIDER_GMAIL_SEND_ENABLED": "false"}  # meant to kill gmail.send only
        with RolloutClient(server.url, environ=killed) as client:
            client.wait_ready(5)
            other = client.evaluate("gmail-send", {"actor_id": "a", "internal": True})
        return verdict(
            not (init[0].returncode == init[1].returncode == 0) or other.reason != "DISABLED",
            f"`rollout init` took both gmail.send and gmail-send (exit "
            f"{init[0].returncode}, {init[1].returncode}); killing via "
            f"PROVIDER_GMAIL_SEND_ENABLED disables gmail-send too ({other.reason}: {other.error});"
            f" an uninitialised gmail_send serves {served.percent}% from the shared fallback",
            "feature names that map to distinct environment names (or init refusing a name "
            "whose environment names collide with an initialised feature's)",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
