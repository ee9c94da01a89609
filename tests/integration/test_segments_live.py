"""Segmented rollouts on a real Prometheus (scraping the sample service, which labels its
traffic by region) and a real Redis: two regions ramp, and one region's errors roll back only
that region while the other keeps ramping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from deployments.sample_service import SampleService, gmail_profile
from deployments.servers import RunningServer, start_prometheus
from rollout_core.config import FeatureSpec, expand_segments
from rollout_core.controller import FeatureOutcome, run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action, SloSnapshot
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource
from tests.integration.traffic import poll

pytestmark = pytest.mark.integration

REGIONS = ["eu-west", "us-east"]


@pytest.fixture(scope="module")
def regional_traffic() -> Iterator[SampleService]:
    with SampleService(providers=["seg"], regions=REGIONS) as service:
        yield service


@pytest.fixture(scope="module")
def regional_prometheus(
    regional_traffic: SampleService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_prometheus(
        tmp_path_factory.mktemp("segments-prometheus"),
        scrape_targets={"sample": [regional_traffic.host_port]},
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    yield server
    server.stop()


def spec() -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": "seg",
            "segments": {"by": "region", "values": REGIONS, "order": "parallel"},
            **gmail_profile("15s", "region"),
        }
    )


def error_ratios(source: PrometheusSource) -> dict[str, float | None]:
    snapshots = source.fetch(expand_segments([spec()]), datetime.now(UTC))
    ratios: dict[str, float | None] = {}
    for name, snapshot in snapshots.items():
        assert isinstance(snapshot, SloSnapshot), snapshot
        reading = snapshot.reading("error_rate")
        ratios[name] = reading.value if (reading.samples or 0) > 200 else None
    return ratios


def every_segment_healthy(source: PrometheusSource) -> bool:
    """Every segment's SLOs healthy with evidence: what a promotion waits for (the tests before
    inject errors and latency, and a 15 s window takes that long to forget them)."""
    from rollout_core.model import Verdict
    from rollout_core.policy import evaluate_slos

    units = expand_segments([spec()])
    snapshots = source.fetch(units, datetime.now(UTC))
    return all(
        isinstance(snapshot, SloSnapshot)
        and all(v.verdict is Verdict.HEALTHY for v in evaluate_slos(unit, snapshot))
        for unit, snapshot in ((u, snapshots[u.name]) for u in units)
    )


def segment_percent(client: redis.Redis, region: str) -> str:
    return str(client.get(f"flags:seg:segment:{region}:rollout_percent"))


def test_one_regions_errors_roll_back_only_that_region_while_the_other_ramps(
    redis_url: str, regional_traffic: SampleService, regional_prometheus: RunningServer
) -> None:
    client = connect(redis_url)
    store = RedisFlagStore(client)
    store.init_segments("seg", ["region"], REGIONS, 0, datetime.now(UTC), "test")
    for region in REGIONS:
        client.set(f"flags:seg:segment:{region}:rollout_percent", "10")
    source = PrometheusSource(regional_prometheus.url, timeout=5)
    poll(lambda: error_ratios(source), lambda r: all(v is not None for v in r.values()), 40)

    first = run_pass([spec()], store, source, datetime.now(UTC), dry_run=False)
    assert {name: o.result for name, o in first.items()} == {
        "seg[eu-west]": Action.PROMOTE,
        "seg[us-east]": Action.PROMOTE,
    }
    assert [segment_percent(client, r) for r in REGIONS] == ["50", "50"]

    regional_traffic.inject(["seg"], ["eu-west"], error_rate=0.3)
    try:
        poll(
            lambda: error_ratios(source),
            lambda r: (r["seg[eu-west]"] or 0) > 0.05,
            20,
            "eu-west's error ratio above 5%",
        )
        assert (error_ratios(source)["seg[us-east]"] or 1) < 0.01  # not masked, not leaked
        # us-east's dwell is over; eu-west's is not, and a rollback never waits for it
        past = (datetime.now(UTC) - timedelta(minutes=16)).isoformat(timespec="seconds")
        client.set("flags:seg:segment:us-east:last_change_time", past)
        second = run_pass([spec()], store, source, datetime.now(UTC), dry_run=False)
    finally:
        regional_traffic.inject(["seg"], ["eu-west"], error_rate=0.002)

    rolled_back: FeatureOutcome = second["seg[eu-west]"]
    assert rolled_back.result is Action.ROLLBACK, rolled_back.summary
    assert "error_rate" in rolled_back.summary and "breach" in rolled_back.summary
    assert second["seg[us-east]"].result is Action.PROMOTE, second["seg[us-east]"].summary
    assert [segment_percent(client, r) for r in REGIONS] == ["10", "100"]
    entries = [fields for _, fields in client.xrange("rollout:audit")]
    rollbacks = [e for e in entries if e["action"] == "rollback"]
    assert [(e["feature"], e["segment"]) for e in rollbacks] == [("seg", "eu-west")]
    client.close()


def test_the_sample_service_labels_each_region_and_injects_into_one(
    regional_traffic: SampleService, tmp_path: Path
) -> None:
    text = regional_traffic.exposition().decode()
    assert 'action_exec_total{provider="seg",region="eu-west",action="gmail.send"}' in text
    with pytest.raises(ValueError, match="mars"):
        regional_traffic.inject(["seg"], ["mars"], error_rate=0.1)


def test_the_inject_endpoint_breaks_only_the_named_region(
    regional_traffic: SampleService,
) -> None:
    import json
    import urllib.request

    body = json.dumps({"providers": ["seg"], "regions": ["us-east"], "latency": 0.9}).encode()
    request = urllib.request.Request(
        f"{regional_traffic.url}/inject", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            state = json.loads(answer.read())
        assert state["seg/us-east"]["latency"] == 0.9
        assert state["seg/eu-west"]["latency"] != 0.9
    finally:
        regional_traffic.inject(["seg"], ["us-east"], latency=0.12)


def test_the_controller_flow_reports_one_row_per_segment_in_its_artifact(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    regional_prometheus: RunningServer,
    pushgateway: RunningServer,
    prefect_test_server: None,
    tmp_path: Path,
) -> None:
    import yaml

    from flows.controller import rollout_controller

    for name, value in {
        "REDIS_URL": redis_url,
        "PROMETHEUS_BASE_URL": regional_prometheus.url,
        "PUSHGATEWAY_URL": pushgateway.url,
        "ROLLOUT_AUDIT_LOG": str(tmp_path / "rollout_log.md"),
    }.items():
        monkeypatch.setenv(name, value)
    body = {"segments": {"by": "region", "values": REGIONS}, **gmail_profile("15s", "region")}
    config = tmp_path / "rollouts.yaml"
    config.write_text(yaml.safe_dump({"features": {"seg": body}}), encoding="utf-8")
    client = connect(redis_url)
    RedisFlagStore(client).init_segments("seg", ["region"], REGIONS, 0, datetime.now(UTC))
    source = PrometheusSource(regional_prometheus.url, timeout=5)
    poll(lambda: every_segment_healthy(source), bool, 60, "every region healthy")

    state = rollout_controller(config_path=str(config), dry_run=False, return_state=True)

    assert state.is_completed(), state.message
    assert "seg[eu-west]: promote 0% -> 10%" in state.message
    assert "seg[us-east]: hold 0% -> 0%" not in state.message  # sequential: a hold, unlisted
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as api:
        artifacts = api.read_latest_artifacts()
    table = next(a for a in artifacts if a.key == "rollout-decisions")
    rows = table.data if isinstance(table.data, list) else json.loads(str(table.data))
    assert [(row["feature"], row["action"], row["guard"]) for row in rows] == [
        ("seg[eu-west]", "promote", None),
        ("seg[us-east]", "hold", "segment order"),
    ]
    assert client.get("flags:seg:segment:us-east:rollout_percent") == "0"
    client.close()
