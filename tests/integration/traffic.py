"""Helpers for the metrics and telemetry integration tests: polling and reading servers back."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from rollout_core.telemetry import Totals, totals_from_exposition

T = TypeVar("T")


def poll(probe: Callable[[], T], accept: Callable[[T], bool], timeout: float, what: str = "") -> T:
    """Call probe until accept(result) holds; AssertionError naming `what` (or the last result)
    on timeout.

    Prometheus needs a few scrapes before rate() answers, so tests poll with a deadline
    rather than sleep for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:g}s still waiting for {what or repr(result)}")
        time.sleep(0.1)


def pushed_totals(pushgateway_url: str, job: str = "rollout_controller") -> Totals:
    """What the Pushgateway holds for the job's group, read from its /metrics."""
    with urllib.request.urlopen(f"{pushgateway_url}/metrics", timeout=5) as response:
        return totals_from_exposition(response.read().decode(), job)
