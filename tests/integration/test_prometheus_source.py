"""PrometheusSource against a real Prometheus (1 s scrape) scraping the sample service.

One Prometheus and one sample service serve the module; the first rate() answers about 7 s
after start, so the module fixture waits for it once. Queries use [15s] windows.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from deployments.sample_service import LATENCY_BUCKETS, SampleService
from deployments.servers import RunningServer, start_prometheus
from rollout_core.config import FeatureSpec, RatioQueries, SloSpec
from rollout_core.controller import OutcomeStatus, run_pass, run_status
from rollout_core.errors import MetricsUnavailable, RolloutError
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action, FlagState, SloSnapshot, Verdict
from rollout_core.policy import evaluate_slos, propose
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
BAD_PROMQL = "histogram_quantile(0.95, sum(rate("


def feature(name: str, *slos: SloSpec) -> FeatureSpec:
    slos = slos or PROFILE
    counted = any((slo.min_samples or 0) > 0 for slo in slos)
    return FeatureSpec(name=name, slos=slos, promote_without_traffic=not counted)


def own_error_rate(provider: str) -> SloSpec:
    """An ungrouped error ratio on one provider's series: a handful of samples per query."""
    labels = f'provider="{provider}",action="gmail.send"'
    return SloSpec(
        name="error_rate",
        ratio=RatioQueries(
            errors=f"sum(increase(action_error_total{{{labels}}}[15s]))",
            total=f"sum(increase(action_exec_total{{{labels}}}[15s]))",
        ),
        max=0.01,
        min_samples=200,
    )


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def service() -> Iterator[SampleService]:
    with SampleService(
        providers=["google", "spiky", "bigspike", "tired", "slowest", *SCALE]
    ) as running:
        yield running


# an application's own p95 gauge that holds +Inf: a series Prometheus answers +Inf for
GAUGES = (
    b"# TYPE app_latency_p95_seconds gauge\n"
    b'app_latency_p95_seconds{provider="slowest",action="gmail.send"} +Inf\n'
)


class _Gauges(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(GAUGES)))
        self.end_headers()
        self.wfile.write(GAUGES)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: Prometheus scrapes every second."""


@pytest.fixture(scope="module")
def gauges() -> Iterator[str]:
    """host:port of a tiny exporter serving GAUGES."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gauges)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def prometheus(
    service: SampleService, gauges: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        scrape_targets={"sample": [service.host_port], "gauges": [gauges]},
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


def test_a_bad_query_is_a_bad_data_error_on_that_slo_only(prometheus: RunningServer) -> None:
    broken = SloSpec(name="latency_p95", query=BAD_PROMQL, max=0.5)
    results = PrometheusSource(prometheus.url).fetch(
        [feature("google"), feature("broken", PROFILE[0], broken)], now()
    )
    readings = snapshot(results["broken"])
    error = readings.reading("latency_p95").error
    assert error is not None
    assert (error.slo, error.query, error.kind, error.status) == (
        "latency_p95",
        BAD_PROMQL,
        "bad_data",
        400,
    )
    assert not error.transient and "parse error" in error.detail
    assert readings.reading("error_rate").error is None
    assert isinstance(results["google"], SloSnapshot)


def test_a_query_returning_two_series_is_that_slos_error_naming_their_labels(
    prometheus: RunningServer,
) -> None:
    two = 'sum by (provider) (rate(action_exec_total{provider=~"google|spiky"}[15s]))'
    loose = SloSpec(name="latency_p95", query=two, max=0.5)
    readings = snapshot(
        PrometheusSource(prometheus.url).fetch([feature("google", PROFILE[0], loose)], now())[
            "google"
        ]
    )
    error = readings.reading("latency_p95").error
    assert error is not None and error.kind == "several_series" and not error.transient
    assert sorted(labels["provider"] for labels in error.labels) == ["google", "spiky"]
    assert 'provider="spiky"' in str(error) and two in str(error)
    assert not readings.reading("error_rate").is_missing


def test_vector_0_over_vector_0_is_no_data_never_a_healthy_zero(
    prometheus: RunningServer,
) -> None:
    nan_count = SloSpec(
        name="oauth_refresh_failures", kind="count", query="vector(0)/vector(0)", max=5
    )
    spec = feature("google", PROFILE[0], nan_count)
    readings = snapshot(PrometheusSource(prometheus.url).fetch([spec], now())["google"])
    value = readings.reading("oauth_refresh_failures").value
    assert value is not None and math.isnan(value)
    verdicts = evaluate_slos(spec, readings)
    assert verdicts[0].verdict is Verdict.HEALTHY
    assert verdicts[1].message == "oauth_refresh_failures no data (NaN): inconclusive"
    decision = propose(spec, FlagState("google", 10), verdicts)
    assert decision.action is Action.HOLD


def test_an_empty_result_is_zero_for_a_count_and_no_data_for_a_value(
    prometheus: RunningServer,
) -> None:
    nothing = "sum(increase(no_such_metric_total[15s]))"
    count = SloSpec(name="failures", kind="count", query=nothing, max=5)
    value = SloSpec(name="latency_p95", query=nothing, max=0.5)
    spec = feature("google", PROFILE[0], count, value)
    readings = snapshot(PrometheusSource(prometheus.url).fetch([spec], now())["google"])
    messages = [v.message for v in evaluate_slos(spec, readings)]
    assert messages[1:] == [
        "failures 0 (no series, read as 0) <= max 5: healthy",
        "latency_p95 no data: inconclusive",
    ]


def own_p95(provider: str, limit: float = 0.5) -> SloSpec:
    """An ungrouped p95 of one provider's latency histogram."""
    latency = f'action_latency_seconds_bucket{{provider="{provider}",action="gmail.send"}}'
    query = f"histogram_quantile(0.95, sum by (le) (rate({latency}[15s])))"
    return SloSpec(name="latency_p95", query=query, max=limit)


def test_an_infinite_p95_from_prometheus_holds_a_half_rolled_out_feature_and_writes_nothing(
    prometheus: RunningServer, redis_url: str
) -> None:
    # +Inf is no latency evidence: histogram_quantile answers it only for a quantile above 1
    # (refused at load) or a series that holds +Inf, as this gauge does
    inf_p95 = 'max(app_latency_p95_seconds{provider="slowest",action="gmail.send"})'
    latency = SloSpec(name="latency_p95", query=inf_p95, max=0.5)
    spec = feature("slowest", own_error_rate("slowest"), latency)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisFlagStore(client)
    store.init("slowest", now())
    store.set_percent("slowest", 50, "half rolled out", at=now())
    source = PrometheusSource(prometheus.url)
    readings = poll(
        lambda: snapshot(source.fetch([spec], now())["slowest"]),
        lambda result: result.reading("latency_p95").value == math.inf,
        timeout=20,
        what="the gauge's +Inf",
    )
    assert (readings.reading("error_rate").samples or 0) >= 200  # the error rate is healthy
    written = {key: client.dump(key) for key in client.keys("*")}

    outcome = run_pass([spec], store, source, now(), dry_run=False)["slowest"]

    assert outcome.decision is not None and outcome.decision.action is Action.HOLD
    assert not outcome.applied and outcome.decision.to_percent == 50
    assert "latency_p95 no data (+Inf): inconclusive" in outcome.decision.reasons
    assert {key: client.dump(key) for key in client.keys("*")} == written
    client.close()


def test_a_p95_above_the_top_bucket_reads_as_its_bound_so_only_a_max_below_it_breaches(
    prometheus: RunningServer, service: SampleService
) -> None:
    top = LATENCY_BUCKETS[-1]  # 5 s; every observation of a 1000 s median lands above it
    spec = feature("slowest", own_error_rate("slowest"), own_p95("slowest"))
    source = PrometheusSource(prometheus.url)
    service.inject(["slowest"], latency=1000.0)
    try:
        readings = poll(
            lambda: snapshot(source.fetch([spec], now())["slowest"]),
            lambda result: result.reading("latency_p95").value == top,
            timeout=20,
            what=f"a p95 of {top} (the top finite bucket's bound)",
        )
    finally:
        service.inject(["slowest"], latency=0.12)
    assert evaluate_slos(spec, readings)[1].verdict is Verdict.BREACH  # max 0.5 < 5
    at_the_top = feature("slowest", own_error_rate("slowest"), own_p95("slowest", limit=top))
    blind = evaluate_slos(at_the_top, readings)[1]
    assert (blind.verdict, blind.message) == (Verdict.HEALTHY, "latency_p95 5s <= max 5s: healthy")


def breaching(source: PrometheusSource, spec: FeatureSpec) -> SloSnapshot:
    """Wait until the feature's error ratio shows the injected 20% over 2,000+ requests."""

    def is_breaching(result: SloSnapshot | RolloutError) -> bool:
        reading = snapshot(result).reading("error_rate")
        return (reading.samples or 0) >= 2000 and (reading.value or 0) > 0.15

    return snapshot(poll(lambda: source.fetch([spec], now())[spec.name], is_breaching, timeout=40))


def test_a_breach_rolls_back_from_100_although_the_latency_query_is_malformed(
    prometheus: RunningServer, service: SampleService, redis_url: str
) -> None:
    spec = feature(
        "bigspike",
        own_error_rate("bigspike"),
        SloSpec(name="latency_p95", query=BAD_PROMQL, max=0.5),
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisFlagStore(client)
    store.init("bigspike", now())
    store.set_percent("bigspike", 100, "fully rolled out", at=now())
    service.inject(["bigspike"], rps=200, error_rate=0.2)
    try:
        source = PrometheusSource(prometheus.url)
        breaching(source, spec)
        outcomes = run_pass([spec], store, source, now(), dry_run=False)
    finally:
        service.inject(["bigspike"], rps=50, error_rate=0.002)
    outcome = outcomes["bigspike"]
    assert outcome.decision is not None and outcome.decision.action is Action.ROLLBACK
    assert outcome.applied and client.get("flags:bigspike:rollout_percent") == "10"
    assert outcome.status is OutcomeStatus.CONFIG_ERROR and run_status(outcomes) == "error"
    assert "SLO 'latency_p95'" in outcome.summary and "bad_data" in outcome.summary
    client.close()


def test_a_too_many_samples_query_is_retried_then_transient_and_the_breach_still_rolls_back(
    prometheus_factory: Callable[..., RunningServer], service: SampleService, redis_url: str
) -> None:
    # one provider's error ratio loads ~30 samples; the grouped p95 over 54 providers thousands
    limited = prometheus_factory(
        scrape_targets={"sample": [service.host_port]},
        scrape_interval="1s",
        extra_args=["--query.max-samples=500"],
    )
    latency = SloSpec(name="latency_p95", query=P95, max=0.5, group_by="provider")
    spec = feature("tired", own_error_rate("tired"), latency)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisFlagStore(client)
    store.init("tired", now())
    store.set_percent("tired", 100, "fully rolled out", at=now())
    sleeps: list[float] = []
    source = PrometheusSource(limited.url, retry_backoff=0.1, sleep=sleeps.append)
    service.inject(["tired"], rps=200, error_rate=0.2)
    try:
        readings = breaching(source, spec)
        sent = source.queries_sent
        source.fetch([spec], now())
        per_fetch = source.queries_sent - sent
        outcomes = run_pass([spec], store, source, now(), dry_run=False)
    finally:
        service.inject(["tired"], rps=50, error_rate=0.002)
    error = readings.reading("latency_p95").error
    assert error is not None and error.transient
    assert (error.kind, error.status) == ("execution", 422)
    assert "too many samples" in error.detail
    assert per_fetch == 3 + 2  # three queries, then the failing one retried twice
    assert sleeps[-2:] == [0.1, 0.2]
    outcome = outcomes["tired"]
    assert outcome.status is OutcomeStatus.OK and run_status(outcomes) == "ok"
    assert outcome.decision is not None and outcome.decision.action is Action.ROLLBACK
    assert client.get("flags:tired:rollout_percent") == "10"
    client.close()


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
