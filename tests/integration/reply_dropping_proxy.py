"""A TCP forwarder on loopback in front of a real redis-server that can drop one reply.

Armed, it lets the next script call (EVAL / EVALSHA) through to Redis, and when Redis answers
it closes the client's connection instead of forwarding the reply: the script ran, the client
never hears so. A NOSCRIPT answer is forwarded (the script did not run), and the proxy stays
armed for the EVAL that follows. Every other byte is forwarded unchanged.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["ReplyDroppingProxy", "reply_dropping_proxy"]

_SCRIPT_CALLS = (b"\r\nEVALSHA\r\n", b"\r\nEVAL\r\n")


class ReplyDroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed = False
        self.dropped = 0  # replies dropped so far
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_next_script_reply(self) -> None:
        with self._lock:
            self._armed = True

    def start(self) -> None:
        self._spawn(self._accept)

    def close(self) -> None:
        self._closed = True
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in list(self._sockets):
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # Redis is gone: the client sees its connection closed
                _close(client)
                continue
            self._sockets += [client, upstream]
            pending = {"script": False}
            self._spawn(self._requests, client, upstream, pending)
            self._spawn(self._replies, upstream, client, pending)

    def _requests(self, client: socket.socket, upstream: socket.socket, pending: dict) -> None:
        while chunk := _recv(client):
            with self._lock:
                if self._armed and any(call in chunk for call in _SCRIPT_CALLS):
                    pending["script"] = True
            try:
                upstream.sendall(chunk)
            except OSError:
                break
        _close(upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, pending: dict) -> None:
        while chunk := _recv(upstream):
            with self._lock:
                if pending["script"] and self._armed and not chunk.startswith(b"-NOSCRIPT"):
                    self._armed, pending["script"] = False, False
                    self.dropped += 1
                    break  # the script ran; its reply never reaches the client
                pending["script"] = False
            try:
                client.sendall(chunk)
            except OSError:
                break
        _close(client)
        _close(upstream)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def reply_dropping_proxy(upstream_port: int) -> Iterator[ReplyDroppingProxy]:
    proxy = ReplyDroppingProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
