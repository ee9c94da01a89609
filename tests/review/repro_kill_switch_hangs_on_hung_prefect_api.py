"""`rollout controller pause` against a Prefect API that accepts connections and never answers
(a hung server, a stuck proxy) prints nothing and does not return: observed still running at
200 s (Prefect's client: 60 s request timeout, retried). In an incident the operator's one
kill-switch command hangs silently instead of failing fast with "the Prefect API did not answer".

    .venv/bin/python tests/review/repro_kill_switch_hangs_on_hung_prefect_api.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.getcwd())
from tests.review._support import redis_server, verdict

LIMIT = 90.0


def main() -> int:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            connection, _ = listener.accept()
            held.append(connection)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    server = redis_server()
    env = {
        **os.environ,
        "REDIS_URL": server.url,
        "PREFECT_HOME": tempfile.mkdtemp(prefix="review-prefect-"),
        "PREFECT_API_URL": f"http://127.0.0.1:{listener.getsockname()[1]}/api",
    }
    started = time.monotonic()
    try:
        done = subprocess.run(
            [".venv/bin/rollout", "controller", "pause", "--reason", "incident"],
            env=env,
            capture_output=True,
            timeout=LIMIT,
        )
        elapsed, code, out = time.monotonic() - started, done.returncode, done.stderr.decode()
    except subprocess.TimeoutExpired as expired:
        elapsed, code = time.monotonic() - started, None
        out = (expired.stderr or b"").decode()
    finally:
        server.stop()
    return verdict(
        code is not None and elapsed < 30,
        f"exit {code} after {elapsed:.0f} s; output {out.strip()[:200]!r}",
        "exit 1 within a few seconds: 'the Prefect API at ... did not answer'",
    )


if __name__ == "__main__":
    sys.exit(main())
