"""Redis faults on loopback for the SDK's tests and benchmark: a server that accepts and never
answers, a proxy that delays every reply of a real redis-server, and one that delays only the
script calls."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Self

__all__ = ["FailoverProxy", "HungRedis", "ScriptDelayingProxy", "SlowProxy"]


class _LoopbackFault:
    """A listener on a free loopback port; every socket it opens is closed by `close()`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def close(self) -> None:
        self._closed = True
        for connection in [*self._open, self._listener]:
            with contextlib.suppress(OSError):
                connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class HungRedis(_LoopbackFault):
    """A loopback port that accepts connections and never answers (a hung Redis)."""

    def _accept(self) -> None:
        while not self._closed:
            with contextlib.suppress(OSError):
                connection, _ = self._listener.accept()
                self._open.append(connection)  # read nothing, answer nothing


class SlowProxy(_LoopbackFault):
    """Forwards to a real Redis and holds each reply `delay` seconds (a slow Redis)."""

    def __init__(self, target_port: int, delay: float = 0.3) -> None:
        self._target = ("127.0.0.1", target_port)
        self._delay = delay
        super().__init__()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                continue
            self._open += [downstream, upstream]
            threading.Thread(
                target=self._pipe, args=(downstream, upstream, 0.0), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(upstream, downstream, self._delay), daemon=True
            ).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()


class ScriptDelayingProxy(_LoopbackFault):
    """Forwards to a real Redis at once, except a script call (EVALSHA / EVAL), which reaches
    Redis `delay` seconds later (a request still in flight after its caller gave up).
    `delivered` is set once the delayed call has been handed to Redis."""

    _CALLS = (b"\r\nEVALSHA\r\n", b"\r\nEVAL\r\n")

    def __init__(self, target_port: int, delay: float) -> None:
        self._target = ("127.0.0.1", target_port)
        self._delay = delay
        self.delivered = threading.Event()
        super().__init__()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(self._target)
                self._open += [downstream, upstream]
                threading.Thread(
                    target=self._pump, args=(downstream, upstream), daemon=True
                ).start()

    def _pump(self, downstream: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                ready, _, _ = select.select([downstream, upstream], [], [])
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return  # the upstream side stays open for a delayed call
                    if source is upstream:
                        with contextlib.suppress(OSError):
                            downstream.sendall(data)
                    elif any(call in data.upper() for call in self._CALLS):
                        threading.Timer(self._delay, self._deliver, (upstream, data)).start()
                        return  # the delayed call owns the upstream side from now on
                    else:
                        upstream.sendall(data)

    def _deliver(self, upstream: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            upstream.sendall(data)
            upstream.recv(65536)  # Redis has run it once it answers
        self.delivered.set()


class FailoverProxy(_LoopbackFault):
    """Forwards new connections to the current target; `failover(port)` switches the target
    and black-holes every older connection (kept open, nothing forwarded, never closed), as
    when the old primary's address vanishes: no FIN, no RST."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._generation = 0
        super().__init__()

    def failover(self, target_port: int) -> None:
        self._target, self._generation = target_port, self._generation + 1

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._target))
                self._open += [downstream, upstream]
                threading.Thread(
                    target=self._pump, args=(downstream, upstream, self._generation), daemon=True
                ).start()

    def _pump(self, downstream: socket.socket, upstream: socket.socket, generation: int) -> None:
        # closing the proxy closes the sockets under this thread: select() then sees fd -1
        with contextlib.suppress(OSError, ValueError):
            while generation == self._generation:
                ready, _, _ = select.select([downstream, upstream], [], [], 0.05)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is downstream else downstream).sendall(data)
