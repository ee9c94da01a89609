"""A Prometheus (or a proxy in front of it) that drips its range answer is read to the end:
`rollout backtest` has no total deadline.

slo.HttpQueryClient.query reads an answer within a total deadline (review 9: requests'
timeout bounds each socket read only). Its new sibling query_range, which history.RangeReader
uses for backtest and tune, calls `session.get(..., timeout=...)` and `response.json()`:
a server that sends one byte per second (each read under the timeout) holds the command for
as long as it likes. The CLI's timeout is max(PROMETHEUS_TIMEOUT, 30 s) per read, so a
dripped 1 MB answer is eleven days.

Observed: with a 2 s timeout, a 60-byte answer dripped at 0.4 s a byte is read to the end and
returned as data after ~24 s. Expected: MetricsUnavailable once the 2 s deadline has passed
(as `query` does), so the CLI exits 1 saying Prometheus did not answer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from rollout_core.config import parse_config
from rollout_core.errors import MetricsUnavailable
from rollout_core.history import RangeReader

BODY = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
CONFIG = """
features:
  f1:
    promote_without_traffic: true
    slos:
      - name: up
        query: sum(up)
        max: 1
"""


@contextmanager
def dripping_prometheus() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(BODY))
            for byte in BODY:
                if stop.wait(0.4):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


def test_a_dripped_range_answer_is_unavailable_not_read_to_the_end() -> None:
    spec = parse_config(CONFIG).feature("f1")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    with dripping_prometheus() as url:
        reader = RangeReader(url, timeout=2.0)
        with pytest.raises(MetricsUnavailable):
            reader.read([spec], start, start + timedelta(hours=1), timedelta(minutes=10))
