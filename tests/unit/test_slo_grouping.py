"""PrometheusSource: query economy, grouping, missing readings and per-SLO query errors.

A stub client stands in for the HTTP client where only the answers matter; a tiny loopback
HTTP server stands in for Prometheus where the real HTTP behaviour matters.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from rollout_core.config import FeatureSpec, RatioQueries, SloSpec
from rollout_core.errors import ConfigError, MetricsUnavailable
from rollout_core.model import Action, FlagState, SloReading, SloSnapshot, Verdict
from rollout_core.policy import evaluate_slos, propose
from rollout_core.slo import Answer, PrometheusSource
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
    """These tests read SLOs; a feature without a request count opts out of traffic evidence."""
    slos = slos or grouped_profile()
    counted = any((slo.min_samples or 0) > 0 for slo in slos)
    return FeatureSpec(
        name=name, slos=slos, metric_key=metric_key, promote_without_traffic=not counted
    )


def vector(*series: tuple[str, float], label: str = "provider") -> list[dict[str, Any]]:
    return [{"metric": {label: key}, "value": [1736157600, str(value)]} for key, value in series]


class StubPrometheus:
    """Answers queries from a table: a result list (HTTP 200), an Answer as it is, or an
    exception raised; a list of those is answered one per call."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str]]] = []

    def query(self, promql: str, params: Any) -> Answer:
        self.calls.append((promql, dict(params)))
        answer = self.answers[promql]
        if isinstance(answer, tuple):
            answer = answer[min(sum(q == promql for q, _ in self.calls), len(answer)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Answer):
            return answer
        return Answer(200, {"status": "success", "data": {"result": answer}})


def prometheus_error(status: int, kind: str, detail: str) -> Answer:
    return Answer(status, {"status": "error", "errorType": kind, "error": detail})


def source_with(answers: dict[str, Any], **options: Any) -> tuple[PrometheusSource, StubPrometheus]:
    stub = StubPrometheus(answers)
    return PrometheusSource("http://127.0.0.1:9", client=stub, retry_backoff=0, **options), stub


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


def test_nan_is_a_missing_reading_kept_as_nan_so_the_policy_can_say_so() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = vector(("google", float("nan")))
    answers[TOTAL] = vector(("google", float("nan")))
    source, _ = source_with(answers)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    for name in ("latency_p95", "error_rate"):
        reading = readings.reading(name)
        assert reading.is_missing and reading.value is not None and math.isnan(reading.value)
        assert reading.error is None
    messages = [v.message for v in evaluate_slos(feature("google"), readings)]
    assert messages[:2] == [
        "error_rate no data (NaN): inconclusive",
        "latency_p95 no data (NaN): inconclusive",
    ]


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
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert readings.reading("oauth") == SloReading("oauth", None, None)
    verdicts = evaluate_slos(feature("google"), readings)
    assert verdicts[2].message == "oauth 0 (no series, read as 0) <= max 5: healthy"


def test_an_absent_count_is_missing_when_absent_is_zero_is_off() -> None:
    strict = SloSpec(name="oauth", kind="count", query=OAUTH, max=5, absent_is_zero=False)
    source, _ = source_with({OAUTH: []})
    reading = snapshot(source.fetch([feature("google", strict)], AT)["google"]).reading("oauth")
    assert reading.is_missing


@pytest.mark.parametrize(("text", "said"), [("NaN", "NaN"), ("+Inf", "+Inf"), ("-Inf", "-Inf")])
def test_a_nan_or_infinite_count_is_no_data_even_when_absent_is_zero(text: str, said: str) -> None:
    count = SloSpec(name="oauth", kind="count", query=OAUTH, max=5)
    source, _ = source_with({OAUTH: [1736157600, text]})
    reading = snapshot(source.fetch([feature("google", count)], AT)["google"]).reading("oauth")
    assert reading.is_missing
    (verdict,) = evaluate_slos(feature("google", count), SloSnapshot("google", {"oauth": reading}))
    assert verdict.message == f"oauth no data ({said}): inconclusive"


def test_a_value_slo_takes_its_samples_from_the_samples_query() -> None:
    latency = SloSpec(name="latency_p95", query="p95", samples="requests", max=0.5, min_samples=10)
    source, _ = source_with({"p95": [1736157600, "0.31"], "requests": [1736157600, "420"]})
    reading = snapshot(source.fetch([feature("google", latency)], AT)["google"]).reading(
        "latency_p95"
    )
    assert reading == SloReading("latency_p95", 0.31, 420.0)


def test_an_ungrouped_query_with_several_series_is_only_that_slos_error() -> None:
    loose = SloSpec(name="latency_p95", query="p95 by provider", max=0.5)
    ratio = grouped_profile()[0]
    answers = healthy_answers(["broken", "google"])
    answers["p95 by provider"] = vector(("a", 1.0), ("b", 2.0))
    source, _ = source_with(answers)
    results = source.fetch([feature("broken", ratio, loose), feature("google")], AT)
    broken = snapshot(results["broken"])
    error = broken.reading("latency_p95").error
    assert error is not None and not error.transient
    assert (error.slo, error.query, error.kind) == (
        "latency_p95",
        "p95 by provider",
        "several_series",
    )
    assert error.labels == ({"provider": "a"}, {"provider": "b"})
    assert "2 series" in str(error) and "sum(" in str(error) and 'provider="b"' in str(error)
    assert broken.reading("error_rate") == SloReading("error_rate", 0.002, 1000.0)
    assert isinstance(results["google"], SloSnapshot)


def test_a_grouped_query_without_the_group_label_is_that_slos_config_error() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [1736157600, "0.2"]
    source, _ = source_with(answers)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    error = readings.reading("latency_p95").error
    assert error is not None and error.kind == "no_group_label"
    assert "without the label 'provider'" in str(error)
    assert not readings.reading("error_rate").is_missing


def test_two_series_for_one_feature_in_a_grouped_query_is_that_slos_config_error() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [
        {"metric": {"provider": "google", "action": a}, "value": [0, "0.2"]} for a in "xy"
    ]
    source, _ = source_with(answers)
    error = snapshot(source.fetch([feature("google")], AT)["google"]).reading("latency_p95").error
    assert error is not None and "2 series with provider='google'" in str(error)
    assert {labels["action"] for labels in error.labels} == {"x", "y"}


def test_a_range_vector_result_is_a_config_error_naming_the_fix() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = [{"metric": {"provider": "google"}, "values": [[0, "1"]]}]
    source, _ = source_with(answers)
    error = snapshot(source.fetch([feature("google")], AT)["google"]).reading("latency_p95").error
    assert error is not None and error.kind == "bad_result" and not error.transient
    assert "increase()" in str(error)


def test_a_broken_latency_query_does_not_stop_the_rollback_the_error_rate_demands() -> None:
    answers = healthy_answers([])
    answers[ERRORS] = vector(("google", 400.0))
    answers[TOTAL] = vector(("google", 2000.0))
    answers[P95] = prometheus_error(400, "bad_data", "1:20: parse error: unexpected end")
    answers[OAUTH] = []
    source, _ = source_with(answers)
    spec = feature("google")
    readings = snapshot(source.fetch([spec], AT)["google"])
    decision = propose(spec, FlagState("google", 100), evaluate_slos(spec, readings))
    assert (decision.action, decision.to_percent) == (Action.ROLLBACK, 10)
    (problem,) = decision.configuration_problems
    assert "SLO 'latency_p95'" in problem and "bad_data" in problem and P95 in problem


def test_a_transient_query_error_is_retried_for_that_query_only_then_reported() -> None:
    answers = healthy_answers(["google"])
    too_many = prometheus_error(422, "execution", "query processing would load too many samples")
    answers[P95] = (too_many, too_many, too_many)
    source, stub = source_with(answers)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert [q for q, _ in stub.calls].count(P95) == 3
    assert [q for q, _ in stub.calls].count(ERRORS) == 1
    error = readings.reading("latency_p95").error
    assert error is not None and error.transient and error.kind == "execution"
    assert error.status == 422
    verdicts = evaluate_slos(feature("google"), readings)
    assert verdicts[1].verdict is Verdict.INCONCLUSIVE
    assert verdicts[1].message.startswith("latency_p95 transient query error: HTTP 422 execution")
    decision = propose(feature("google"), FlagState("google", 10), verdicts)
    assert decision.action is Action.HOLD and decision.configuration_problems == ()


def test_a_transient_error_that_clears_on_retry_gives_the_reading() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = (prometheus_error(503, "timeout", "query timed out"), vector(("google", 0.2)))
    sleeps: list[float] = []
    stub = StubPrometheus(answers)
    source = PrometheusSource("http://127.0.0.1:9", client=stub, sleep=sleeps.append)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert readings.reading("latency_p95") == SloReading("latency_p95", 0.2, None)
    assert sleeps == [0.5]


def test_retries_can_be_turned_off() -> None:
    answers = healthy_answers(["google"])
    answers[P95] = prometheus_error(503, "timeout", "query timed out")
    source, stub = source_with(answers, query_retries=0)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    assert [q for q, _ in stub.calls].count(P95) == 1
    assert readings.reading("latency_p95").error is not None


class FakePrometheus(BaseHTTPRequestHandler):
    """/api/v1/query answering per query: "ok", "bad" (400), "tired" (422), "down" (a proxy's
    503 without a Prometheus error), "slow", "junk"."""

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
            "tired": (422, {"status": "error", "errorType": "execution", "error": "too many"}),
            "down": (503, "<html>Service Unavailable</html>"),
            "junk": (200, {"hello": "world"}),
        }.get(mode, (200, {"status": "success", "data": {"resultType": "vector", "result": []}}))
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
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


def test_a_rejected_shared_query_is_a_query_error_on_each_slo_using_it(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = {P95: "bad", OAUTH: "tired"}
    other = SloSpec(name="errors", kind="count", query="other", max=1)
    source = PrometheusSource(fake_prometheus, timeout=2, retry_backoff=0)
    results = source.fetch([feature("a"), feature("b"), feature("c", other)], AT)
    for name in ("a", "b"):
        readings = snapshot(results[name])
        error = readings.reading("latency_p95").error
        assert error is not None
        assert (error.slo, error.query, error.kind, error.status) == (
            "latency_p95",
            P95,
            "bad_data",
            400,
        )
        assert not error.transient and "parse error" in str(error)
        oauth = readings.reading("oauth").error
        assert oauth is not None and oauth.transient and oauth.kind == "execution"
    assert snapshot(results["c"]).reading("errors").error is None


def test_a_5xx_answer_without_a_prometheus_error_on_every_query_raises_metrics_unavailable(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = dict.fromkeys((ERRORS, TOTAL, P95, OAUTH), "down")
    with pytest.raises(MetricsUnavailable, match="HTTP 503"):
        PrometheusSource(fake_prometheus, timeout=2).fetch([feature("google")], AT)


def test_a_proxys_5xx_on_one_query_is_that_slos_transient_error(fake_prometheus: str) -> None:
    # found by the whole-pass invariant suite: like a client timeout, a proxy's 503 on one
    # query failed the whole pass and blocked a rollback another SLO demanded
    FakePrometheus.behaviour = {OAUTH: "down"}
    source = PrometheusSource(fake_prometheus, timeout=2)
    readings = snapshot(source.fetch([feature("google")], AT)["google"])
    error = readings.reading("oauth").error
    assert error is not None and error.transient and error.status == 503
    assert "HTTP 503 without a Prometheus error" in str(error)
    assert readings.reading("error_rate").error is None


def test_a_hung_prometheus_raises_metrics_unavailable_after_two_timeouts(
    fake_prometheus: str,
) -> None:
    FakePrometheus.behaviour = {query: "slow" for query in (ERRORS, TOTAL, P95, OAUTH)}
    source = PrometheusSource(fake_prometheus, timeout=0.2)
    with pytest.raises(MetricsUnavailable, match=r"no answer within 0\.2s"):
        source.fetch([feature("google")], AT)
    assert source.queries_sent == 2  # not one timeout per query


def test_one_slow_query_is_that_slos_transient_error_and_the_others_keep_their_readings(
    fake_prometheus: str,
) -> None:
    # found by the whole-pass invariant suite: one query's client timeout raised
    # MetricsUnavailable for the whole pass, so it blocked a rollback another SLO demanded
    FakePrometheus.behaviour = {P95: "slow"}
    source = PrometheusSource(fake_prometheus, timeout=0.2, query_retries=2)
    readings = source.fetch([feature("google")], AT)["google"]
    assert isinstance(readings, SloSnapshot)
    error = readings.reading("latency_p95").error
    assert error is not None and error.transient and error.kind == "unreachable"
    assert "no answer within 0.2s" in str(error) and P95 in str(error)
    assert readings.reading("error_rate").error is None
    assert source.queries_sent == 4  # the slow query already waited its timeout: no retry


def test_a_prometheus_that_stops_answering_mid_fetch_is_not_waited_on_once_per_query() -> None:
    timeout = requests.ReadTimeout("Read timed out. (read timeout=10)")
    answers = healthy_answers(["google"]) | {TOTAL: timeout, P95: timeout}
    source, stub = source_with(answers)

    readings = snapshot(source.fetch([feature("google")], AT)["google"])

    assert [query for query, _ in stub.calls] == [ERRORS, TOTAL, P95]  # OAUTH not sent
    oauth = readings.reading("oauth").error
    assert oauth is not None and oauth.transient and oauth.kind == "unreachable"
    assert "not sent: Prometheus stopped answering (no answer within 10s)" in str(oauth)


def test_a_refused_connection_on_every_query_raises_after_two_tries() -> None:
    refused = requests.ConnectionError("[Errno 111] Connection refused")
    source, stub = source_with(dict.fromkeys((ERRORS, TOTAL, P95, OAUTH), refused))
    with pytest.raises(MetricsUnavailable, match="connection refused"):
        source.fetch([feature("google")], AT)
    assert len(stub.calls) == 2


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


def test_an_empty_base_url_is_a_config_error_even_with_the_variable_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMETHEUS_BASE_URL", "http://127.0.0.1:9090")
    with pytest.raises(ConfigError, match="PROMETHEUS_BASE_URL is not set"):
        PrometheusSource("")


def test_urls_are_redacted_and_split_for_basic_auth() -> None:
    assert redact_url("https://u:p%40ss@prom:9090/x") == "https://u:****@prom:9090/x"
    assert redact_url("http://prom:9090") == "http://prom:9090"
    assert split_credentials("https://u:p%40ss@prom:9090/x") == (
        "https://prom:9090/x",
        ("u", "p@ss"),
    )


def test_a_string_result_is_refused_as_not_an_instant_vector() -> None:
    from rollout_core.slo import parse_result

    with pytest.raises(ValueError, match="a string, not an instant vector"):
        parse_result([1700000000.0, "0"], "string")
    assert parse_result([1700000000.0, "0"], "scalar")[0].value == 0.0
