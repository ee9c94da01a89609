"""The launcher starts each real server and it answers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from deployments.servers import RunningServer


def test_redis_server_answers_ping(redis_url: str) -> None:
    assert redis.Redis.from_url(redis_url).ping() is True


def test_prometheus_scrapes_a_pushgateway(
    prometheus_factory: Callable[..., RunningServer], pushgateway: RunningServer
) -> None:
    prometheus = prometheus_factory(scrape_targets={"pushgateway": [pushgateway.host_port]})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/status/config", timeout=5) as response:
        body = json.load(response)
    assert pushgateway.host_port in body["data"]["yaml"]


def test_alertmanager_starts_with_an_empty_config(
    alertmanager_factory: Callable[[Path], RunningServer], tmp_path: Path
) -> None:
    config = tmp_path / "am.yml"
    config.write_text("route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n")
    server = alertmanager_factory(config)
    with urllib.request.urlopen(f"{server.url}/api/v2/status", timeout=5) as response:
        assert json.load(response)["cluster"]["status"] == "disabled"
