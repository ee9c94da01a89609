"""Shared helpers for the R14 review repros (issue 14: backtest, tune, explain).

Each repro is a pytest file that pytest does not collect by itself (`repro_*.py`); run one with
`.venv/bin/python -m pytest tests/review/repro_x.py -q`. Each fails while its defect stands and
passes once it is fixed. They start real servers (redis-server, prometheus + promtool) on free
loopback ports, one Prometheus at a time, with small histories.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from deployments.servers import RunningServer, require_binary, start_prometheus, start_redis

__all__ = [
    "iso",
    "json_of",
    "openmetrics_counters",
    "prometheus_with",
    "redis_server",
    "rollout",
]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rollout(*args: str, env: dict[str, str] | None = None) -> Result:
    from rollout_cli.main import app

    return CliRunner().invoke(app, list(args), env=env)


def json_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


@contextmanager
def redis_server() -> Iterator[RunningServer]:
    server = start_redis(Path(tempfile.mkdtemp(prefix="review14-redis-")))
    try:
        yield server
    finally:
        server.stop()


def openmetrics_counters(
    families: dict[str, dict[str, Callable[[int], float | None]]], times: list[int]
) -> str:
    """OpenMetrics text: for each counter family, each series (labels text -> value at a unix
    second, None for no sample there), one sample per time."""
    lines: list[str] = []
    for family, series in families.items():
        lines.append(f"# TYPE {family} counter")
        for labels, value_at in series.items():
            for at in times:
                value = value_at(at)
                if value is not None:
                    lines.append(f"{family}_total{{{labels}}} {value:g} {at}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@contextmanager
def prometheus_with(openmetrics: str, *extra_args: str) -> Iterator[RunningServer]:
    """A real Prometheus holding exactly this backfilled history (promtool); `extra_args` are
    added flags, e.g. `--query.max-samples=100`."""
    data_dir = Path(tempfile.mkdtemp(prefix="review14-prom-"))
    source = data_dir / "history.om"
    source.write_text(openmetrics, encoding="utf-8")
    subprocess.run(
        [require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source),
         str(data_dir / "tsdb")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    server = start_prometheus(
        data_dir, extra_args=["--storage.tsdb.retention.time=3650d", *extra_args]
    )
    try:
        yield server
    finally:
        server.stop()
