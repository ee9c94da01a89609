"""`rollout set` after a lost write reads back on a fresh connection and, when the write id is
not there YET, says "not applied, nothing written; run the command again". A request still in
flight (TCP retransmitting through a short partition; the client closed its socket on timeout
but the kernel keeps sending the queued bytes) lands after that read-back: the change IS
applied, with an audit entry, after the operator was told it was not; running the command
again, as told, applies a second change.

A loopback proxy models the flight: it forwards everything at once except a script call
(EVALSHA/EVAL), which it delivers to Redis 7 s later (past the CLI's 5 s socket timeout).

    .venv/bin/python tests/review/repro_set_reports_not_applied_then_applies.py
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time

import redis

sys.path.insert(0, os.getcwd())
from tests.review._support import redis_server, verdict

SCRIPT_CALLS = (b"\r\nEVALSHA\r\n", b"\r\nEVAL\r\n")


class DelayingProxy:
    def __init__(self, port: int, delay: float) -> None:
        self.port, self.delay = port, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.port))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                ready, _, _ = select.select([client, upstream], [], [])
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and any(call in data.upper() for call in SCRIPT_CALLS):
                        threading.Timer(self.delay, upstream.sendall, (data,)).start()
                    elif source is client:
                        upstream.sendall(data)
                    else:
                        with contextlib.suppress(OSError):
                            client.sendall(data)


def main() -> int:
    server = redis_server()
    try:
        env = {**os.environ, "REDIS_URL": server.url}
        subprocess.run([".venv/bin/rollout", "init", "google"], env=env, check=True)
        # an earlier write loads the script into Redis' cache, as on any server in use
        subprocess.run(
            [".venv/bin/rollout", "set", "google", "5", "--reason", "r"], env=env, check=True
        )
        proxy = DelayingProxy(server.port, delay=7.0)
        done = subprocess.run(
            [".venv/bin/rollout", "set", "google", "10", "--reason", "review"],
            env={**env, "REDIS_URL": proxy.url},
            capture_output=True,
            text=True,
        )
        said = (done.stdout + done.stderr).strip()
        time.sleep(5)
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        held = raw.get("flags:google:rollout_percent")
        entries = [f["action"] for _, f in raw.xrange("rollout:audit") if f.get("action")]
        print(said)
        told_not_applied = "not applied" in said
        return verdict(
            not (told_not_applied and held == "10"),
            f"exit {done.returncode}: {said[:220]!r}; 5 s later Redis holds {held!r}, audit "
            f"actions {entries}",
            "never 'not applied' for a write that can still land: either the script refuses a "
            "write id older than its deadline, or the CLI says the outcome is unknown",
        )
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
