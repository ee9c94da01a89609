"""Shared helpers for the review repros (run each repro_*.py with .venv/bin/python; pytest does
not collect them). Each starts its own redis-server on a free loopback port."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from deployments.servers import RunningServer, start_redis


def redis_server() -> RunningServer:
    return start_redis(Path(tempfile.mkdtemp(prefix="review-redis-")))


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def verdict(ok: bool, observed: str, expected: str) -> int:
    print(("HELD UP" if ok else "DEFECT") + f"\n  observed: {observed}\n  expected: {expected}")
    return 0 if ok else 1
