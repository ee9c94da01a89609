"""The alert bridge over HTTP (Starlette's test client): events for good payloads, a clear 4xx
for every kind of bad request, never a crash, and its counters on /metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from deployments.alert_bridge import BridgeMetrics, create_app
from rollout_core.errors import ConfigError

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 4096


def am_alert(status: str = "firing", feature: str = "google", **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "GmailErrorRateFast", "rollout_feature": feature},
        "annotations": {"value": "0.08"},
        "startsAt": "2026-11-30T06:00:00Z",
        "fingerprint": "ab12",
        **extra,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": list(alerts)}


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.error = error

    async def __call__(self, events: Sequence[dict[str, Any]]) -> None:
        if self.error is not None:
            raise self.error
        self.sent.extend(events)


def bridge(sender: Recorder) -> tuple[TestClient, BridgeMetrics]:
    metrics = BridgeMetrics.create()
    app = create_app(TOKEN, ["google"], sender, max_body_bytes=LIMIT, metrics=metrics)
    return TestClient(app), metrics


def counter(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_firing_and_a_resolved_alert_become_two_events() -> None:
    sender = Recorder()
    client, metrics = bridge(sender)
    unlabelled = {**am_alert(), "labels": {"alertname": "NotOurs"}}
    response = client.post(
        "/alerts", json=payload(am_alert(), am_alert("resolved"), unlabelled), headers=AUTH
    )
    assert response.status_code == 200 and response.json() == {"emitted": 2, "ignored": 1}
    assert [e["event"] for e in sender.sent] == ["rollout.alert.firing", "rollout.alert.resolved"]
    first = sender.sent[0]
    assert first["resource"]["prefect.resource.id"] == "rollout.feature.google"
    assert first["payload"]["alert"]["fingerprint"] == "ab12"
    assert first["payload"]["alert"]["starts_at"] == "2026-11-30T06:00:00Z"
    assert first["payload"]["alert"]["value"] == "0.08"
    fired = counter(metrics, "rollout_bridge_events_emitted_total", event="rollout.alert.firing")
    assert fired == 1
    assert counter(metrics, "rollout_bridge_requests_received_total") == 1


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_a_missing_or_wrong_token_is_401(headers: dict[str, str]) -> None:
    sender = Recorder()
    client, metrics = bridge(sender)
    response = client.post("/alerts", json=payload(am_alert()), headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert sender.sent == []
    assert counter(metrics, "rollout_bridge_requests_rejected_total", reason="unauthorized") == 1


@pytest.mark.parametrize(
    ("body", "status", "reason", "detail"),
    [
        (b"{not json", 400, "malformed_json", "not JSON"),
        (b"\xff\xfe\x00", 400, "malformed_json", "not JSON"),
        (b"[]", 422, "invalid_payload", "expected a JSON object"),
        (b'"text"', 422, "invalid_payload", "expected a JSON object"),
        (json.dumps({"alerts": []}).encode(), 422, "invalid_payload", "version is None"),
        (json.dumps({"version": "4"}).encode(), 422, "invalid_payload", "alerts is None"),
        (json.dumps(payload(5)).encode(), 422, "invalid_payload", "alerts[0] is 5"),  # type: ignore[arg-type]
        (
            json.dumps(payload({**am_alert(), "labels": ["x"]})).encode(),
            422,
            "invalid_payload",
            "alerts[0].labels",
        ),
        (
            json.dumps(payload({**am_alert(), "startsAt": 17})).encode(),
            422,
            "invalid_payload",
            "alerts[0].startsAt is 17",
        ),
        (
            json.dumps(payload(am_alert(feature="payments"))).encode(),
            422,
            "unknown_feature",
            "unknown feature(s) payments",
        ),
        (b"x" * (LIMIT + 1), 413, "too_large", f"body over {LIMIT} bytes"),
    ],
)
def test_a_bad_request_is_a_clear_4xx_and_sends_nothing(
    body: bytes, status: int, reason: str, detail: str
) -> None:
    sender = Recorder()
    client, metrics = bridge(sender)
    response = client.post("/alerts", content=body, headers=AUTH)
    assert response.status_code == status
    assert response.json()["error"] == reason and detail in response.json()["detail"]
    assert sender.sent == []
    assert counter(metrics, "rollout_bridge_requests_rejected_total", reason=reason) == 1


def test_a_huge_streamed_body_without_length_is_cut_at_the_limit() -> None:
    client, _ = bridge(Recorder())
    chunks = (os.urandom(1024) for _ in range(64))
    response = client.post("/alerts", content=chunks, headers=AUTH)
    assert response.status_code == 413


def test_a_prefect_api_that_refuses_the_events_is_a_503_so_alertmanager_retries() -> None:
    client, metrics = bridge(Recorder(httpx.ConnectError("refused")))
    response = client.post("/alerts", json=payload(am_alert()), headers=AUTH)
    assert response.status_code == 503 and "Alertmanager retries" in response.json()["detail"]
    assert counter(metrics, "rollout_bridge_requests_rejected_total", reason="emit_failed") == 1


def test_the_counters_are_served_on_metrics() -> None:
    client, _ = bridge(Recorder())
    client.post("/alerts", json=payload(am_alert()), headers={})
    text = client.get("/metrics").text
    assert 'rollout_bridge_requests_rejected_total{reason="unauthorized"} 1.0' in text
    assert "rollout_bridge_requests_received_total 1.0" in text
    assert client.get("/-/healthy").status_code == 200


def test_a_bridge_without_a_token_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="ROLLOUT_BRIDGE_TOKEN is empty"):
        create_app("", ["google"], Recorder(), max_body_bytes=LIMIT)
