"""Fixtures for the controller flow tests: one Prefect test server, one Prometheus scraping the
Gmail sample service (both per session), the real adapters wired through the environment.

Each flow test names its own features after their own providers in the sample service, so a
test that injects an error spike never disturbs another one. Windows are [15s]: readings
arrive seconds after Prometheus starts, and a spike shows within two or three scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from deployments.sample_service import SampleService, gmail_profile
from deployments.servers import RunningServer, start_prometheus
from tests.integration.traffic import poll

# One provider (and feature) per flow test, so no test sees another's traffic or flags.
FLOW_PROVIDERS = (
    "google",
    "spiky",
    "cool",
    "paused",
    "dry",
    "promdown",
    "redisdown",
    "race",
    "pgwdown",
    "twice",
    "late",
    "override",
    "clirun",
    "clidown",
)
WINDOW = "15s"
GMAIL_PROFILE = gmail_profile(WINDOW)


def write_config(directory: Path, features: Mapping[str, Mapping[str, Any] | None]) -> Path:
    """A rollouts file: the seed's ladder, dwell 15m and cooldown 1h, every feature on the
    Gmail profile grouped by provider (a feature's name is its provider)."""
    document = {
        "defaults": {
            "ladder": [0, 10, 50, 100],
            "safe_percent": 10,
            "dwell": "15m",
            "cooldown": "1h",
        },
        "profiles": {"gmail": GMAIL_PROFILE},
        "features": {name: {"profile": "gmail", **(body or {})} for name, body in features.items()},
    }
    path = directory / "rollouts-test.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def seed_flag(
    client: redis.Redis,
    feature: str,
    percent: float,
    *,
    changed_ago: timedelta | None = None,
    rolled_back_ago: timedelta | None = None,
    paused: bool = False,
) -> None:
    """The flag keys as an operator's history left them, times written into the past."""
    now = datetime.now(UTC)
    keys: dict[str, str] = {
        f"flags:{feature}:enabled": "true",
        f"flags:{feature}:internal_only": "false",
        f"flags:{feature}:rollout_percent": f"{percent:g}",
        f"flags:{feature}:paused": "true" if paused else "false",
    }
    if changed_ago is not None:
        keys[f"flags:{feature}:last_change_time"] = _iso(now - changed_ago)
    if rolled_back_ago is not None:
        keys[f"flags:{feature}:last_rollback_time"] = _iso(now - rolled_back_ago)
    client.mset(keys)  # type: ignore[arg-type]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def flag_keys(client: redis.Redis, feature: str) -> dict[str, str]:
    """Every flags:<feature>:* key and its value."""
    keys = sorted(client.scan_iter(match=f"flags:{feature}:*"))
    values = client.mget(keys) if keys else []
    return {_text(k).rpartition(":")[2]: _text(v) for k, v in zip(keys, values, strict=True)}


def audit_entries(client: redis.Redis, feature: str) -> list[dict[str, str]]:
    """The feature's rollout:audit stream entries, oldest first."""
    entries = client.xrange("rollout:audit")
    fields = [{_text(k): _text(v) for k, v in body.items()} for _, body in entries]
    return [entry for entry in fields if entry.get("feature") == feature]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def readings_ready(prometheus_url: str, features: list[str]) -> None:
    """Wait until every feature's error ratio has enough samples to be judged."""
    from rollout_core.config import FeatureSpec
    from rollout_core.model import SloSnapshot
    from rollout_core.slo import PrometheusSource

    source = PrometheusSource(prometheus_url, timeout=5)
    specs = [FeatureSpec.model_validate({"name": name, **GMAIL_PROFILE}) for name in features]

    def has_samples(results: Mapping[str, object]) -> bool:
        return all(
            isinstance(r, SloSnapshot) and (r.reading("error_rate").samples or 0) > 200
            for r in results.values()
        )

    poll(lambda: source.fetch(specs, datetime.now(UTC)), has_samples, timeout=40)


@pytest.fixture(scope="session")
def prefect_test_server() -> Iterator[None]:
    """One Prefect test server for every flow test of the session (about 8 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def gmail_traffic() -> Iterator[SampleService]:
    """The sample service: healthy Gmail send traffic, one provider per flow test."""
    with SampleService(providers=FLOW_PROVIDERS) as service:
        yield service


@pytest.fixture(scope="session")
def gmail_prometheus(
    gmail_traffic: SampleService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A real Prometheus scraping the sample service every second (readings: see below)."""
    server = start_prometheus(
        tmp_path_factory.mktemp("controller-prometheus"),
        scrape_targets={"sample": [gmail_traffic.host_port]},
        scrape_interval="1s",
        evaluation_interval="1s",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gmail_readings(gmail_prometheus: RunningServer, prefect_test_server: None) -> str:
    """Prometheus' URL once every flow feature can be judged. Requested after the Prefect
    server, so Prometheus' first ~7 s without rate() overlap the server's start."""
    readings_ready(gmail_prometheus.url, list(FLOW_PROVIDERS))
    return gmail_prometheus.url


@pytest.fixture
def controller_env(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    gmail_readings: str,
    pushgateway: RunningServer,
    tmp_path: Path,
) -> dict[str, str]:
    """The real adapters through the environment, as a deployed worker would have them."""
    env = {
        "REDIS_URL": redis_url,
        "PROMETHEUS_BASE_URL": gmail_readings,
        "PROMETHEUS_TIMEOUT_SECONDS": "5",
        "PUSHGATEWAY_URL": pushgateway.url,
        "ROLLOUT_FETCH_BACKOFF_SECONDS": "0.05",  # production: 0.5 (0.5, 1, 2 s)
        "ROLLOUT_AUDIT_LOG": str(tmp_path / "rollout_log.md"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ROLLOUT_DRY_RUN", raising=False)
    return env


@pytest.fixture
def flags(controller_env: Mapping[str, str]) -> Iterator[redis.Redis]:
    """A client on the test's Redis (emptied before the test)."""
    client = redis.Redis.from_url(controller_env["REDIS_URL"], decode_responses=True)
    yield client
    client.close()
