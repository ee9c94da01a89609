"""PrometheusSource against a real Prometheus (1 s scrape) scraping the sample service.

One Prometheus and one sample service serve the module; the first rate() answers about 7 s
after start, so the module fixture waits for it once. Queries use [15s] windows.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

import pytest

from deployments.sample_service import SampleService
from deployments.servers import RunningServer, start_prometheus
from rollout_core.config import FeatureSpec, RatioQueries, SloSpec
from rollout_core.errors import InvalidQuery, MetricsUnavailable, RolloutError
from rollout_core.model import SloSnapshot
from rollout_core.slo import PrometheusSource
from tests.integration.traffic import poll

ERRORS = 'sum by (provider) (increase(action_error_total{action="gmail.send"}[15s]))'
TOTAL = 'sum by (provider) (increase(action_exec_total{action="gmail.send"}[15s]))'
P95 = (
    "histogram_quantile(0.95, sum by (le, provider) "
    '(rate(action_latency_seconds_bucket{action="gmail.send"}[15s])))'
)
OAUTH = 'sum by (provider) (increase(oauth_events_total{event="refresh_failed"}[15s]))'
PROFILE = (
    SloSpec(
        name="error_rate",
        ratio=RatioQueries(errors=ERRORS, total=TOTAL),
        max=0.01,
        min_samples=200,
        group_by="provider",
    ),
    SloSpec(name="latency_p95", query=P95, max=0.5, group_by="provider"),
    SloSpec(name="oauth_refresh_failures", kind="count", query=OAUTH, max=5, group_by="provider"),
)
SCALE = [f"p{n:03d}" for n in range(1, 51)]


def feature(name: str, *slos: SloSpec) -> FeatureSpec:
    return FeatureSpec(name=name, slos=slos or PROFILE)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def service() -> Iterator[SampleService]:
    with SampleService(providers=["google", "spiky", *SCALE]) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(
    service: SampleService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        scrape_targets={"sample": [service.host_port]},
        scrape_interval="1s",
    )
    source = PrometheusSource(server.url, timeout=5)
    try:
        poll(
            lambda: source.fetch([feature("google")], now())["google"],
            lambda result: (
                isinstance(result, SloSnapshot)
                and (result.reading("error_rate").samples or 0) > 200
            ),
            timeout=30,
        )
        yield server
    finally:
        server.stop()


def snapshot(result: SloSnapshot | RolloutError) -> SloSnapshot:
    assert isinstance(result, SloSnapshot), result
    return result


def test_healthy_traffic_reads_as_a_small_error_ratio_with_its_samples(
    prometheus: RunningServer,
) -> None:
    readings = snapshot(
        PrometheusSource(prometheus.url).fetch([feature("google")], now())["google"]
    )
    error_rate = readings.reading("error_rate")
    assert error_rate.value is not None and error_rate.value < 0.01
    assert error_rate.samples is not None and error_rate.samples > 200
    latency = readings.reading("latency_p95").value
    assert latency is not None and 0.1 < latency < 0.5
    assert readings.reading("oauth_refresh_failures").value == 0.0


def test_an_injected_error_spike_is_read_back_for_that_feature_only(
    prometheus: RunningServer, service: SampleService
) -> None:
    source = PrometheusSource(prometheus.url)
    service.inject(["spiky"], error_rate=0.3, latency=0.9)
    try:
        results: Mapping[str, SloSnapshot | RolloutError] = poll(
            lambda: source.fetch([feature("google"), feature("spiky")], now()),
            lambda results: (snapshot(results["spiky"]).reading("error_rate").value or 0) > 0.05,
            timeout=20,
        )
    finally:
        service.inject(["spiky"], error_rate=0.002, latency=0.12)
    assert (snapshot(results["google"]).reading("error_rate").value or 0) < 0.01


def test_a_bad_query_is_an_invalid_query_for_that_feature_only(
    prometheus: RunningServer,
) -> None:
    broken = SloSpec(name="latency_p95", query="histogram_quantile(0.95, sum(rate(", max=0.5)
    results = PrometheusSource(prometheus.url).fetch(
        [feature("google"), feature("broken", broken)], now()
    )
    error = results["broken"]
    assert isinstance(error, InvalidQuery)
    assert (error.feature, error.slo) == ("broken", "latency_p95")
    assert "parse error" in str(error)
    assert isinstance(results["google"], SloSnapshot)


def test_the_query_count_does_not_grow_with_the_number_of_features(
    prometheus: RunningServer,
) -> None:
    source = PrometheusSource(prometheus.url)
    sent: dict[int, int] = {}
    for count in (1, 10, 50):
        before = source.queries_sent
        results = source.fetch([feature(name) for name in SCALE[:count]], now())
        sent[count] = source.queries_sent - before
        assert all(
            not snapshot(result).reading("error_rate").is_missing for result in results.values()
        )
    print(f"\nqueries per fetch by feature count: {sent}")
    assert sent == {1: 4, 10: 4, 50: 4}


def test_a_killed_prometheus_raises_metrics_unavailable_at_once(
    prometheus_factory: Callable[..., RunningServer],
) -> None:
    doomed = prometheus_factory()
    source = PrometheusSource(doomed.url, timeout=2)
    doomed.kill()
    started = time.perf_counter()
    with pytest.raises(MetricsUnavailable, match="connection refused"):
        source.fetch([feature("google")], now())
    print(f"\nkilled Prometheus -> MetricsUnavailable in {time.perf_counter() - started:.4f} s")


def test_the_sample_service_exports_the_original_names_and_takes_injections(
    service: SampleService,
) -> None:
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    for name in (
        'action_exec_total{provider="google",action="gmail.send"}',
        'action_error_total{provider="google",action="gmail.send"}',
        'action_latency_seconds_bucket{provider="google",action="gmail.send",le="0.5"}',
        'oauth_events_total{provider="google",event="refresh_failed"}',
    ):
        assert name in text
    request = urllib.request.Request(
        f"{service.url}/inject",
        data=json.dumps({"oauth_failures_per_min": 6, "providers": ["p050"]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        state = json.load(response)
    service.inject(["p050"], oauth_failures_per_min=0)
    assert state["p050"]["oauth_failures_per_min"] == 6
    assert state["google"]["oauth_failures_per_min"] == 0
