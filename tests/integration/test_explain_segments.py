"""`rollout explain` on a segment's audit entry written by a real controller flow run
(Prefect test server, real Redis, a real Prometheus scraping region-labelled traffic)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deployments.sample_service import gmail_profile
from deployments.servers import RunningServer
from rollout_cli.main import app
from rollout_core.flags import RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.test_segments_live import (  # noqa: F401 (module fixtures)
    REGIONS,
    error_ratios,
    regional_prometheus,
    regional_traffic,
)
from tests.integration.traffic import poll

pytestmark = pytest.mark.integration


def write(path: Path, min_samples: int = 200) -> Path:
    body = {"segments": {"by": "region", "values": REGIONS}, **gmail_profile("15s", "region")}
    for slo in body["slos"]:
        if slo["name"] == "error_rate":
            slo["min_samples"] = min_samples
    path.write_text(yaml.safe_dump({"features": {"seg": body}}), encoding="utf-8")
    return path


def test_a_segments_promotion_from_a_flow_run_is_explained_through_its_own_segment(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    regional_prometheus: RunningServer,  # noqa: F811
    pushgateway: RunningServer,
    prefect_test_server: None,
    tmp_path: Path,
) -> None:
    from flows.controller import rollout_controller

    for name, value in {
        "REDIS_URL": redis_url,
        "PROMETHEUS_BASE_URL": regional_prometheus.url,
        "PUSHGATEWAY_URL": pushgateway.url,
        "ROLLOUT_AUDIT_LOG": str(tmp_path / "rollout_log.md"),
    }.items():
        monkeypatch.setenv(name, value)
    config = write(tmp_path / "rollouts.yaml")
    client = connect(redis_url)
    RedisFlagStore(client).init_segments("seg", ["region"], REGIONS, 0, datetime.now(UTC))
    poll(
        lambda: error_ratios(PrometheusSource(regional_prometheus.url, timeout=5)),
        lambda r: all(v is not None for v in r.values()),
        40,
    )

    state = rollout_controller(config_path=str(config), dry_run=False, return_state=True)
    assert state.is_completed(), state.message

    [(entry_id, entry)] = [
        (i, e) for i, e in client.xrange("rollout:audit") if e.get("action") == "promote"
    ]
    assert entry["segment"] == "eu-west" and len(entry["inputs"]) < 2048
    same = CliRunner().invoke(app, ["explain", entry_id, "--config", str(config), "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["reproduces"] is True

    stricter = write(tmp_path / "stricter.yaml", min_samples=10**9)
    changed = CliRunner().invoke(app, ["explain", entry_id, "--config", str(stricter), "--json"])
    body = json.loads(changed.stdout)
    assert body["reproduces"] is False
    assert any("min_samples changed 200 -> 1000000000" in d for d in body["differences"])
    client.close()
