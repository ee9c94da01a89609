"""Shared helpers for the R15 review reproductions (real redis-server primary, replica and
three Sentinels on loopback, started with the project's own deployments.ha)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deployments.ha import RedisHA, start_redis_ha

PROJECT = Path(__file__).resolve().parents[2]
ROLLOUT = str(Path(sys.executable).with_name("rollout"))


@contextmanager
def redis_ha(directory: Path) -> Iterator[RedisHA]:
    ha = start_redis_ha(directory)
    try:
        yield ha
    finally:
        ha.stop()


def replica_of(ha: RedisHA):  # type: ignore[no-untyped-def]
    return next(n for n in ha.nodes if n.port != ha.master_port())


def cli(ha: RedisHA, tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`rollout ...` as an operator runs it after `source .stack/env.sh` of an HA stack."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "ROLLOUT_", "PREFECT_"))
    }
    env.update(
        REDIS_URL=ha.url,
        REDIS_SENTINELS=ha.sentinel_hosts,
        REDIS_SENTINEL_SERVICE="rollout",
        ROLLOUT_AUDIT_LOG=str(tmp / "rollout_log.md"),
        PREFECT_HOME=str(tmp / "prefect-home"),
    )
    env.update(extra)
    return subprocess.run(
        [ROLLOUT, *args], capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120
    )
