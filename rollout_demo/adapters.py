"""The demo's embedded parts: a Redis (a real redis-server when installed, else fakeredis)
and a telemetry sink that keeps each run's counts in memory instead of pushing them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import redis

from rollout_core.model import Action

__all__ = ["EmbeddedRedis", "RecordedRun", "RecordedTelemetry", "embedded_redis"]


@dataclass(frozen=True)
class RecordedRun:
    results: dict[str, str]
    percents: dict[str, float]
    status: str
    at: datetime


@dataclass
class RecordedTelemetry:
    """The TelemetrySink for the demo: no Pushgateway, the runs are kept for the summary."""

    runs: list[RecordedRun] = field(default_factory=list)

    def record_run(
        self,
        results: Mapping[str, Action],
        percents: Mapping[str, float],
        status: str,
        at: datetime,
        scheduled: bool = True,  # the demo's runs are never scheduled; it keeps no last success
    ) -> str | None:
        self.runs.append(
            RecordedRun({k: str(v) for k, v in results.items()}, dict(percents), status, at)
        )
        return None  # recorded as asked; nothing to warn about

    def count(self, status: str) -> int:
        return sum(run.status == status for run in self.runs)


@dataclass(frozen=True)
class EmbeddedRedis:
    client: redis.Redis
    description: str


@contextmanager
def embedded_redis(data_dir: Path) -> Iterator[EmbeddedRedis]:
    """redis-server on a free loopback port when it is on the PATH (stopped on exit), else an
    in-process fakeredis with Lua."""
    if shutil.which("redis-server") is None:
        import fakeredis

        fake: redis.Redis = fakeredis.FakeRedis(decode_responses=True)
        yield EmbeddedRedis(fake, "fakeredis (in process; no redis-server on the PATH)")
        return
    from deployments.servers import start_redis
    from rollout_core.redis_connection import connect

    server = start_redis(data_dir)
    try:
        client = connect(server.url)
        yield EmbeddedRedis(client, f"redis-server at {server.url} (pid {server.process.pid})")
        client.close()
    finally:
        server.stop()
