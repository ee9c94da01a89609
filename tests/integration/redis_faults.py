"""Redis faults on loopback for the SDK's tests and benchmark: a server that accepts and never
answers, and a proxy that delays every reply of a real redis-server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["HungRedis", "SlowProxy"]


class HungRedis:
    """A loopback port that accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def _accept(self) -> None:
        while not self._closed:
            with contextlib.suppress(OSError):
                connection, _ = self._listener.accept()
                self._held.append(connection)  # read nothing, answer nothing

    def close(self) -> None:
        self._closed = True
        for connection in [*self._held, self._listener]:
            with contextlib.suppress(OSError):
                connection.close()

    def __enter__(self) -> HungRedis:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class SlowProxy:
    """Forwards to a real Redis and holds each reply `delay` seconds (a slow Redis)."""

    def __init__(self, target_port: int, delay: float = 0.3) -> None:
        self._target = ("127.0.0.1", target_port)
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

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

    def close(self) -> None:
        self._closed = True
        for connection in [*self._open, self._listener]:
            with contextlib.suppress(OSError):
                connection.close()

    def __enter__(self) -> SlowProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
