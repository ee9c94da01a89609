"""PrometheusSource: query economy, grouping, missing readings and error mapping.

A stub client stands in for PrometheusConnect where only the results matter; a tiny loopback
HTTP server stands in for Prometheus where the library's real HTTP behaviour matters.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from rollout_core.config import FeatureSpec, RatioQueries, SloSpec
from rollout_core.errors import ConfigError, InvalidQuery, MetricsUnavailable
from rollout_core.model import SloReading, SloSnapshot
from rollout_core.slo import PrometheusSource
from rollout_core.urls import redact_url, split_credentials

AT = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
ERRORS = "sum by (provider) (increase(action_error_total[5m]))"
TOTAL = "sum by (provider) (increase(action_exec_total[5m]))"
P95 = "histogram_quantile(0.95, sum by (le, provider) (rate(action_latency_seconds_bucket[5m])))"
OAUTH = 'sum by (provider) (increase(oauth_events_total{event="refresh_failed"}[15m]))'


def grouped_profile() -> tuple[SloSpec, ...]:
    return (
        SloSpec(
            name="error_rate",
            ratio=RatioQueries(errors=ERRORS, total=TOTAL),
            max=0.01,
            group_by="provider",
        ),
        SloSpec(name="latency_p95", query=P95, max=0.5, group_by="provider"),
        SloSpec(name="oauth", kind="count", query=OAUTH, max=5, group_by="provider"),
    )


def feature(name: str, *slos: SloSpec, metric_key: str | None = None) -> FeatureSpec:
    return FeatureSpec(name=name, slos=slos or grouped_profile(), metric_key=metric_key)


def vector(*series: tuple[str, float], label: str = "provider") -> list[dict[str, Any]]:
    return [{"metric": {label: key}, "value": [1736157600, str(value)]} for key, value in series]


class StubPrometheus:
    """Answers custom_query from a table; an exception in the table is raised."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    def custom_query(self, query: str, params: dict[str, Any] | None = None) -> Any:
        self.calls.append((query, params))
        answer = self.answers[query]
        if isinstance(answer, Exception):
            raise answer
        return answer


def source_with(answers: dict[str, Any]) -> tuple[PrometheusSource, StubPrometheus]:
    stub = StubPrometheus(answers)
    return PrometheusSource("http://127.0.0.1:9", client=stub), stub


def healthy_answers(providers: list[str]) -> dict[str, Any]:
    return {
        ERRORS: vector(*[(p, 2.0) for p in providers]),
        TOTAL: vector(*[(p, 1000.0) for p in providers]),
        P95: vector(*[(p, 0.18) for p in providers]),
        OAUTH: vector(*[(p, 1.0) for p in providers]),
    }


def snapshot(result: object) -> SloSnapshot:
    assert isinstance(result, SloSnapshot), result
    return result


@pytest.mark.parametrize("count", [1, 10, 1000])
def test_features_sharing_a_grouped_profile_cost_one_query_per_distinct_text(count: int) -> None:
    names = [f"p{n:04d}" for n in range(count)]
    profile = grouped_profile()
    source, stub = source_with(healthy_answers(names))
    results = source.fetch([feature(name, *profile) for name in names], AT)
    assert source.queries_sent == 4
    assert sorted(query for query, _ in stub.calls) == sorted([ERRORS, TOTAL, P95, OAUTH])
    assert snapshot(results[names[-1]]).reading("error_rate") == SloReading(
        "error_rate", 0.002, 1000.0
    )


def test_each_feature_takes_the_series_labelled_with_its_own_key() -> None:
    answers = healthy_answers([])
    answers[TOTAL] = vector(("google", 1000.0), ("outlook", 400.0))
    answers[ERRORS] = vector(("google", 10.0), ("outlook", 1.0))
    source, _ = source_with(answers)
    results = source.fetch([feature("gmail-send", metric_key="google"), feature("outlook")], AT)
    assert snapshot(results["gmail-send"]).reading("error_rate").value == pytest.approx(0.01)
    assert snapshot(results["outlook"]).reading("error_rate") == SloReading(
        "error_rate", 0.0025, 400.0
    )


def test_every_query_is_evaluated_at_the_time_of_the_fetch() -> None:
    source, stub = source_with(healthy_answers(["google"]))
    result = source.fetch([feature("google")], AT)
    assert {params["time"] for _, params in stub.calls if params} == {"1736157600.000"}
    assert snapshot(result["google"]).taken_at == AT


def test_a_naive_fetch_time_is_read_as_utc() -> None:
    source, stub = source_with(healthy_answers(["google"]))
    source.fetch([feature("google")], AT.replace(tzinfo=None))
    assert stub.calls[0][1] == {"time": "1736157600.000"}


def test_an_empty_result_is_a_missing_reading_never_zero() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = []
    answers[ERRORS] = []
    source, _ = source_with(answers)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert readings.reading("latency_p95").is_missing
    assert readings.reading("error_rate") == SloReading("error_rate", None, 1000.0)


def test_nan_is_a_missing_reading() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = vector(("google", float("nan")))
    answers[TOTAL] = vector(("google", float("nan")))
    source, _ = source_with(answers)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert readings.reading("latency_p95") == SloReading("latency_p95", None, None)
    assert readings.reading("error_rate") == SloReading("error_rate", None, None)


def test_a_ratio_without_traffic_is_missing_with_zero_samples() -> None:
    answers = healthy_answers(["google"])
    answers[TOTAL] = vector(("google", 0.0))
    answers[ERRORS] = vector(("google", 0.0))
    source, _ = source_with(answers)
    reading = snapshot(source.fetch([feature("google")], AT)["google"]).reading("error_rate")
    assert reading == SloReading("error_rate", None, 0.0)


def test_an_absent_count_is_zero_when_absent_is_zero() -> None:
    answers = healthy_answers(["google"])
    answers[OAUTH] = vector(("outlook", 3.0))
    source, _ = source_with(answers)
    reading = snapshot(source.fetch([feature("google")], AT)["google"]).reading("oauth")
    assert reading == SloReading("oauth", 0.0, None)


def test_an_absent_count_is_missing_when_absent_is_zero_is_off() -> None:
    strict = SloSpec(name="oauth", kind="count", query=OAUTH, max=5, absent_is_zero=False)
    source, _ = source_with({OAUTH: []})
    reading = snapshot(source.fetch([feature("google", strict)], AT)["google"]).reading("oauth")
    assert reading.is_missing


def test_a_nan_count_is_missing_even_when_absent_is_zero() -> None:
    count = SloSpec(name="oauth", kind="count", query=OAUTH, max=5)
    source, _ = source_with({OAUTH: [1736157600, "NaN"]})
    reading = snapshot(source.fetch([feature("google", count)], AT)["google"]).reading("oauth")
    assert reading.is_missing


def test_a_value_slo_takes_its_samples_from_the_samples_query() -> None:
    latency = SloSpec(name="latency_p95", query="p95", samples="requests", max=0.5, min_samples=10)
    source, _ = source_with({"p95": [1736157600, "0.31"], "requests": [1736157600, "420"]})
    reading = snapshot(source.fetch([feature("google", latency)], AT)["google"]).reading(
        "latency_p95"
    )
    assert reading == SloReading("latency_p95", 0.31, 420.0)


def test_an_ungrouped_query_with_several_series_is_only_that_features_error() -> None:
    loose = SloSpec(name="latency_p95", query="p95 by provider", max=0.5)
    answers = healthy_answers(["google"]) | {"p95 by provider": vector(("a", 1.0), ("b", 2.0))}
    source, _ = source_with(answers)
    results = source.fetch([feature("broken", loose), feature("google")], AT)
    error = results["broken"]
    assert isinstance(error, ConfigError)
    assert "returned 2 series" in str(error) and "sum(" in str(error) and "group_by" in str(error)
    assert isinstance(results["google"], SloSnapshot)


def test_a_grouped_query_without_the_group_label_is_a_config_error() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [1736157600, "0.2"]
    source, _ = source_with(answers)
    error = source.fetch([feature("google")], AT)["google"]
    assert isinstance(error, ConfigError)
    assert "without the label 'provider'" in str(error)


def test_two_series_for_one_feature_in_a_grouped_query_is_a_config_error() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [
        {"metric": {"provider": "google", "action": a}, "value": [0, "0.2"]} for a in "xy"
    ]
    source, _ = source_with(answers)
    error = source.fetch([feature("google")], AT)["google"]
    assert isinstance(error, ConfigError)
    assert "2 series with provider='google'" in str(error)


def test_a_range_vector_result_is_a_config_error_naming_the_fix() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [{"metric": {"provider": "google"}, "values": [[0, "1"]]}]
    source, _ = source_with(answers)
    error = source.fetch([feature("google")], AT)["google"]
    assert isinstance(error, ConfigError)
    assert "increase()" in str(error)


class FakePrometheus(BaseHTTPRequestHandler):
    """/api/v1/query answering per query: "ok", "bad" (400), "down" (503), "slow", "junk"."""

    behaviour: ClassVar[dict[str, str]] = {}
    seen_auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        mode = self.behaviour.get(query, "ok")
        if mode == "slow":
            time.sleep(1.0)
        status, body = {
            "bad": (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
            "down": (503, {"status": "error", "error": "query timed out"}),
            "junk": (200, {"hello": "world"}),
        }.get(mode, (200, {"status": "success", "data": {"resultType": "vector", "result": []}}))
        payload = json.dumps(body).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    server.daemon_threads = True
    FakePrometheus.behaviour = {}
    FakePrometheus.seen_auth = []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_rejected_shared_query_is_an_invalid_query_for_each_feature_using_it(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = {P95: "bad"}
    other = SloSpec(name="errors", kind="count", query="other", max=1)
    source = PrometheusSource(fake_prometheus, timeout=2)
    results = source.fetch([feature("a"), feature("b"), feature("c", other)], AT)
    for name in ("a", "b"):
        error = results[name]
        assert isinstance(error, InvalidQuery)
        assert (error.feature, error.slo, error.query) == (name, "latency_p95", P95)
        assert "parse error" in str(error)
    assert isinstance(results["c"], SloSnapshot)


def test_a_5xx_answer_raises_metrics_unavailable(fake_prometheus: str) -> None:
    FakePrometheus.behaviour = {OAUTH: "down"}
    with pytest.raises(MetricsUnavailable, match="HTTP 503"):
        PrometheusSource(fake_prometheus, timeout=2).fetch([feature("google")], AT)


def test_a_slow_prometheus_raises_metrics_unavailable_after_the_timeout(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = {ERRORS: "slow"}
    with pytest.raises(MetricsUnavailable, match=r"no answer within 0\.2s"):
        PrometheusSource(fake_prometheus, timeout=0.2).fetch([feature("google")], AT)


def test_an_answer_that_is_not_the_prometheus_api_raises_metrics_unavailable(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = {ERRORS: "junk"}
    with pytest.raises(MetricsUnavailable, match="PROMETHEUS_BASE_URL"):
        PrometheusSource(fake_prometheus, timeout=2).fetch([feature("google")], AT)


def test_a_refused_connection_raises_metrics_unavailable_without_the_password() -> None:
    source = PrometheusSource("http://admin:s3cret@127.0.0.1:9", timeout=2)
    with pytest.raises(MetricsUnavailable) as caught:
        source.fetch([feature("google")], AT)
    message = str(caught.value)
    assert "connection refused" in message
    assert "s3cret" not in message and "***@127.0.0.1:9" in message


def test_credentials_in_the_url_become_basic_auth(fake_prometheus: str) -> None:
    url = fake_prometheus.replace("http://", "http://admin:s3cret@")
    PrometheusSource(url, timeout=2).fetch([feature("google")], AT)
    assert FakePrometheus.seen_auth[0] == "Basic YWRtaW46czNjcmV0"


def test_a_missing_base_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="PROMETHEUS_BASE_URL is not set"):
        PrometheusSource()


def test_urls_are_redacted_and_split_for_basic_auth() -> None:
    assert redact_url("https://u:p%40ss@prom:9090/x") == "https://u:****@prom:9090/x"
    assert redact_url("http://prom:9090") == "http://prom:9090"
    assert split_credentials("https://u:p%40ss@prom:9090/x") == (
        "https://prom:9090/x",
        ("u", "p@ss"),
    )
