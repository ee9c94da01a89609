"""A Prometheus query has a total deadline (review 9, R8): requests' timeout bounds each
socket read only, so a server that drips its answer one byte at a time must still fail the
fetch as unreachable, instead of being read to the end."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rollout_core.config import parse_config
from rollout_core.errors import MetricsUnavailable
from rollout_core.history import RangeReader
from rollout_core.slo import PrometheusSource

BODY = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


@pytest.fixture
def dripping_prometheus() -> Iterator[str]:
    """An HTTP server on loopback that sends its headers, then one body byte every 0.5 s
    (each under the client's read timeout): about 30 s for the whole answer."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(BODY))
            for byte in BODY:
                if stop.wait(0.5):
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
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_a_dripping_prometheus_is_unreachable_not_read_to_the_end(
    dripping_prometheus: str,
) -> None:
    specs = parse_config(
        "features:\n  f1:\n    slos: [{name: e, query: up, max: 1}]\n    "
        "promote_without_traffic: true\n"
    ).select(None)
    source = PrometheusSource(dripping_prometheus, timeout=2)
    with pytest.raises(MetricsUnavailable, match="no answer within 2s"):
        source.fetch(specs, datetime.now(UTC))


def test_a_dripped_range_answer_is_unavailable_within_the_deadline_not_read_to_the_end(
    dripping_prometheus: str,
) -> None:
    spec = parse_config(
        "features:\n  f1:\n    slos: [{name: e, query: up, max: 1}]\n    "
        "promote_without_traffic: true\n"
    ).feature("f1")
    start = datetime(2026, 1, 5, tzinfo=UTC)
    reader = RangeReader(dripping_prometheus, timeout=2)

    with pytest.raises(MetricsUnavailable, match="no complete answer to a range read within 2s"):
        reader.read([spec], start, start + timedelta(hours=1), timedelta(minutes=10))
