"""The flag store's write path against a real redis-server on loopback: one manual set, one
pipelined batch of 1,000 compare-and-sets (every key compared), and the read-back after a
reply is lost (through the reply-dropping proxy the integration tests use). Prints figures,
asserts none.

Run: `.venv/bin/python benchmarks/flag_writes.py` (a few seconds).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from deployments.servers import start_redis
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action
from rollout_core.ports import FlagChange
from rollout_core.redis_connection import connect
from tests.integration.reply_dropping_proxy import reply_dropping_proxy

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)
FEATURES = 1000


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            client = connect(server.url)
            store = RedisFlagStore(client)
            names = [f"f{n:04d}" for n in range(FEATURES)]
            for name in names:
                store.init(name, AT)

            single = []
            for step in range(200):
                started = time.perf_counter()
                store.set_percent("f0000", step % 100 + 0.5, "bench", "bench", at=AT)
                single.append(time.perf_counter() - started)
            print(f"rollout set (read + CAS), median of 200: {_ms(statistics.median(single))}")

            states = store.read(names)
            changes = [
                FlagChange(
                    name,
                    0,
                    False,
                    10,
                    "bench",
                    "controller",
                    AT,
                    Action.PROMOTE,
                    expected_raw=states[name].raw,
                )
                for name in names[1:]
            ]
            started = time.perf_counter()
            results = store.apply_many(changes)
            batch = time.perf_counter() - started
            applied = sum(1 for r in results if not isinstance(r, Exception) and r.applied)
            print(
                f"apply_many of {len(changes)} CAS (7 keys compared each): {_ms(batch)}, "
                f"{applied} applied"
            )

            with reply_dropping_proxy(server.port) as proxy:
                via_proxy = RedisFlagStore(connect(proxy.url))
                via_proxy.set_percent("f0001", 20, "warm", "bench", at=AT)  # scripts loaded
                recovered, read_back = [], 0
                for step in range(20):
                    proxy.drop_next_script_reply()
                    started = time.perf_counter()
                    result = via_proxy.set_percent("f0001", 30 + step, "bench", "bench", at=AT)
                    recovered.append(time.perf_counter() - started)
                    read_back += result.recovered
                print(
                    f"set with its reply lost, read back on a new connection, median of 20: "
                    f"{_ms(statistics.median(recovered))} ({read_back}/20 read back as written)"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
