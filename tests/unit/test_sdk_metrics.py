"""Client metrics: each feature's state age, staleness and served percent, refresh errors,
read at scrape time from a dedicated registry."""

from __future__ import annotations

import fakeredis
from prometheus_client import CollectorRegistry, generate_latest

from rollout_sdk import RolloutClient
from rollout_sdk.metrics import register_metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_an_operator_can_alert_on_a_process_stuck_on_stale_flags() -> None:
    server, clock = fakeredis.FakeServer(), FakeClock()
    redis = fakeredis.FakeRedis(server=server)
    redis.set("flags:google:rollout_percent", "37")
    client = RolloutClient(client=redis, environ={}, clock=clock, max_stale=60, start=False)
    client.refresh(["google"])
    registry = CollectorRegistry()
    register_metrics(client, registry)
    clock.now += 12.5
    assert (
        registry.get_sample_value("rollout_client_state_age_seconds", {"feature": "google"}) == 12.5
    )
    assert registry.get_sample_value("rollout_client_served_percent", {"feature": "google"}) == 37
    assert registry.get_sample_value("rollout_client_stale", {"feature": "google"}) == 0
    server.connected = False
    client.refresh()
    client.refresh()
    clock.now += 50
    assert registry.get_sample_value("rollout_client_refresh_errors_total") == 2
    assert registry.get_sample_value("rollout_client_stale", {"feature": "google"}) == 1
    assert registry.get_sample_value("rollout_client_served_percent", {"feature": "google"}) == 0
    assert b'rollout_client_state_age_seconds{feature="google"} 62.5' in generate_latest(registry)
    assert registry.get_sample_value("rollout_client_ready") == 0  # no full read succeeded yet
