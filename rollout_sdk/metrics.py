"""Client metrics through prometheus_client, for services that already export metrics:

    from rollout_sdk.metrics import register_metrics
    register_metrics(flags)            # the default registry, or registry=...

Read at scrape time from `RolloutClient.status()`, so the request path pays nothing:
`rollout_client_state_age_seconds{feature}` (alert when it nears max_stale),
`rollout_client_stale{feature}` (1 while failing closed), `rollout_client_served_percent{feature}`,
`rollout_client_refresh_errors_total`, `rollout_client_ready`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rollout_sdk.client import RolloutClient

__all__ = ["ClientCollector", "register_metrics"]


class ClientCollector(Collector):
    """A prometheus_client collector over one RolloutClient's status."""

    def __init__(self, client: RolloutClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        status = self.client.status()
        age = GaugeMetricFamily(
            "rollout_client_state_age_seconds",
            "Seconds since the read that fetched the feature's state this process serves.",
            labels=["feature"],
        )
        stale = GaugeMetricFamily(
            "rollout_client_stale",
            "1 while the feature's state is older than max_stale and the client fails closed.",
            labels=["feature"],
        )
        served = GaugeMetricFamily(
            "rollout_client_served_percent",
            "The rollout percent this process serves (0 when killed, disabled or stale).",
            labels=["feature"],
        )
        for name, feature in sorted(status.features.items()):
            if feature.age is not None:
                age.add_metric([name], feature.age)
            stale.add_metric([name], float(feature.stale))
            served.add_metric([name], feature.percent)
        errors = CounterMetricFamily(
            "rollout_client_refresh_errors", "Background reads of Redis that failed."
        )
        errors.add_metric([], status.refresh_errors)
        ready = GaugeMetricFamily(
            "rollout_client_ready", "1 once the client has read its flags from Redis."
        )
        ready.add_metric([], float(status.ready))
        yield from (age, stale, served, errors, ready)


def register_metrics(
    client: RolloutClient, registry: CollectorRegistry = REGISTRY
) -> ClientCollector:
    """Register the client's metrics; returns the collector (to unregister it later)."""
    collector = ClientCollector(client)
    registry.register(collector)
    return collector
