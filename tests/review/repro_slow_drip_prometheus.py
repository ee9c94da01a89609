"""FAILING REPRO (review 9, defect R14): no total deadline on a Prometheus query (nor on the
flow or its tasks), so a Prometheus - or a proxy in front of it - that answers one byte at a
time holds the pass far beyond PROMETHEUS_TIMEOUT_SECONDS.

`requests`' timeout bounds each socket read, not the response: with timeout=3 a body dripped
at one byte per second is read to the end (here about 60 s for one 60-byte answer; a real
answer of a few KB per query, times the queries, times fetch_slos' 4 tries, is hours). No
`timeout_seconds` is set on the flow or its tasks, and the deployment's concurrency limit is
CANCEL_NEW, so every later scheduled run - including one that would roll back - is cancelled
while this one hangs. (SIGSTOP of Prometheus held up: bounded by the timeout.)
Wanted: a total deadline per query (and a flow/task timeout), reported as prom_unreachable.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime

import pytest

from rollout_core.config import parse_config
from rollout_core.errors import MetricsUnavailable
from rollout_core.slo import PrometheusSource

BODY = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


def _drip_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        conn.sendall(head % len(BODY))
        for byte in BODY:
            conn.sendall(bytes([byte]))
            time.sleep(1)  # under the 3 s read timeout, every time
        conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def test_a_dripping_prometheus_fails_the_fetch_within_a_few_timeouts() -> None:
    server, port = _drip_server()
    specs = parse_config(
        "features:\n  f1:\n    slos: [{name: e, query: up, max: 1}]\n    "
        "promote_without_traffic: true\n"
    ).select(None)
    source = PrometheusSource(f"http://127.0.0.1:{port}", timeout=3)
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable):  # observed: no error; the answer is read whole
        source.fetch(specs, datetime.now(UTC))
    elapsed = time.monotonic() - started
    server.close()
    assert elapsed < 10, f"one query took {elapsed:.0f}s with timeout=3"  # observed: ~63 s
