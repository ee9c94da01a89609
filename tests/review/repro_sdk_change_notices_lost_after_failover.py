"""After a failover that black-holes the old connections (the old primary's host vanishes or
its address moves: no FIN, no RST), the client's polling reconnects to the new server within
a socket timeout, but its change-notice subscription stays on the dead connection for good:
`pubsub.get_message(timeout=0.5)` just returns None forever (no health_check_interval, no PING),
so nothing is ever logged and notices never arrive again. A `rollout set` then takes the full
poll interval (5 s by default, 60 s in the tests' "polls once a minute" client) instead of
under a second, silently.

A loopback proxy plays the network: new connections go to the current target; "failover"
switches the target to a second redis-server and stops forwarding on the old connections.

    .venv/bin/python tests/review/repro_sdk_change_notices_lost_after_failover.py
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

sys.path.insert(0, os.getcwd())
from rollout_sdk import RolloutClient
from tests.review._support import eventually, redis_server, verdict


class FailoverProxy:
    def __init__(self, port: int) -> None:
        self.target = port
        self.generation = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def failover(self, port: int) -> None:
        self.target, self.generation = port, self.generation + 1

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(
                target=self._pump, args=(client, upstream, self.generation), daemon=True
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket, generation: int) -> None:
        with contextlib.suppress(OSError):
            while generation == self.generation:
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        # black hole: keep both sockets open, forward nothing, never close
        while True:
            time.sleep(3600)


def seed(url: str, percent: str) -> None:
    env = {**os.environ, "REDIS_URL": url}
    for args in (["init", "google"], ["audience", "google", "public", "--reason", "r"],
                 ["set", "google", percent, "--reason", "r"]):  # fmt: skip
        subprocess.run([".venv/bin/rollout", *args], env=env, check=True, capture_output=True)


def main() -> int:
    old, new = redis_server(), redis_server()
    seed(old.url, "10")
    seed(new.url, "10")
    proxy = FailoverProxy(old.port)
    try:
        with RolloutClient(proxy.url, refresh_interval=30, environ={}) as client:
            assert client.wait_ready(5)
            time.sleep(1)
            env = {**os.environ, "REDIS_URL": proxy.url}
            subprocess.run([".venv/bin/rollout", "set", "google", "20", "--reason", "r"], env=env,
                           check=True, capture_output=True)  # fmt: skip
            before = eventually(lambda: client.percent("google") == 20, 2)
            proxy.failover(new.port)
            client.refresh()  # the poll's connection: times out once, then reconnects
            time.sleep(1.5)
            client.refresh()
            time.sleep(3)  # ample time for a listener to notice and resubscribe
            subprocess.run([".venv/bin/rollout", "set", "google", "30", "--reason", "r"], env=env,
                           check=True, capture_output=True)  # fmt: skip
            after = eventually(lambda: client.percent("google") == 30, 5)
            return verdict(
                before and after,
                f"notice applied before the failover: {before}; a `rollout set` on the new "
                f"server reached the client within 5 s: {after} "
                f"(percent {client.percent('google')}, "
                f"refresh errors {client.status().refresh_errors})",
                "the listener detects the dead subscription (health check / PING with a timeout) "
                "and resubscribes to the new server: the notice arrives within a second",
            )
    finally:
        old.stop()
        new.stop()


if __name__ == "__main__":
    sys.exit(main())
