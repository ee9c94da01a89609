"""The controller core at scale: one decision pass over 1, 100 and 1,000 features against a
real redis-server and a real Prometheus scraping the sample service (providers p0001..p1000),
with one grouped SLO profile shared by every feature. Then the Prefect overhead of one flow
run on a test server that is already up. Prints figures, asserts none. Loopback only.

Segments: 1,000 features x 5 regions in one pass, against a sample service (in its own
process, so its scrapes are not counted) that labels every series by region: the number of
Prometheus queries (the same as 1,000 features without segments) and the pass's core time
(CPU seconds of this process: fetch and parse, decide, read and write Redis).

Run: `.venv/bin/python benchmarks/controller_scale.py` (about 60-90 s on 2 cores), or
`--segments-only` for the segmented figures alone.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import yaml
from redis.connection import Connection

from deployments.sample_service import SampleService, gmail_profile
from deployments.servers import (
    free_port,
    scoped_environ,
    start_process,
    start_prometheus,
    start_pushgateway,
    start_redis,
    wait_for_http,
)
from rollout_core.config import FeatureSpec, expand_segments, parse_config
from rollout_core.controller import run_pass
from rollout_core.flags import RedisFlagStore
from rollout_core.model import Action, SloSnapshot
from rollout_core.redis_connection import connect
from rollout_core.slo import PrometheusSource

SIZES = (1, 100, 1000)
PROVIDERS = [f"p{n:04d}" for n in range(1, 1001)]
REPEATS = 3
WINDOW = "20s"


class CountingConnection(Connection):
    """A Redis connection that counts what it sends. redis-py writes one command, or one whole
    pipeline, with a single send_packed_command and then reads the replies, so each call is
    one network round trip (a NOSCRIPT fallback shows up as the extra SCRIPT LOAD it is)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def counted_client(url: str) -> redis.Redis:
    """The production client (timeouts, retry budget) on counting connections."""
    client = connect(url)
    client.connection_pool.connection_class = CountingConnection
    client.ping()  # open the connection now: its handshake is not part of a pass
    return client


def grouped_config(features: list[str]) -> str:
    """One profile, grouped by provider: four PromQL queries whatever the feature count."""

    document = {
        "profiles": {"gmail": gmail_profile(WINDOW)},
        "features": {name: {"profile": "gmail"} for name in features},
    }
    return yaml.safe_dump(document, sort_keys=False)


def seed(client: redis.Redis, features: list[str], percent: str, changed: datetime | None) -> None:
    """Flag keys for every feature, in one pipeline; `changed` None leaves no history."""
    pipe = client.pipeline(transaction=False)
    for name in features:
        pipe.delete(f"flags:{name}:last_change_time", f"flags:{name}:last_percent")
        keys = {"enabled": "true", "rollout_percent": percent, "paused": "false"}
        if changed is not None:
            keys["last_change_time"] = changed.isoformat(timespec="seconds")
        pipe.mset({f"flags:{name}:{field}": value for field, value in keys.items()})
    pipe.execute()


def wait_for_readings(source: PrometheusSource, specs: list[FeatureSpec]) -> float:
    """Seconds until every feature's error ratio has enough samples to be judged."""
    started = time.perf_counter()
    while True:
        results = source.fetch(specs, datetime.now(UTC))
        if all(
            isinstance(r, SloSnapshot) and (r.reading("error_rate").samples or 0) >= 200
            for r in results.values()
        ):
            return time.perf_counter() - started
        if time.perf_counter() - started > 60:
            raise RuntimeError("Prometheus had no readings for every provider after 60 s")
        time.sleep(0.5)


def measure_pass(
    specs: list[FeatureSpec], store: RedisFlagStore, source: PrometheusSource
) -> tuple[float, int, int, dict[str, int]]:
    """One pass: wall seconds, queries sent, Redis round trips, and the results by action."""
    queries, trips = source.queries_sent, CountingConnection.sent
    started = time.perf_counter()
    outcomes = run_pass(specs, store, source, datetime.now(UTC), dry_run=False)
    elapsed = time.perf_counter() - started
    results: dict[str, int] = {}
    for outcome in outcomes.values():
        label = str(outcome.result) if not outcome.is_failed else str(outcome.status)
        results[label] = results.get(label, 0) + 1
    return elapsed, source.queries_sent - queries, CountingConnection.sent - trips, results


def report(label: str, runs: list[tuple[float, int, int, dict[str, int]]]) -> float:
    times = [run[0] for run in runs]
    _, queries, trips, results = runs[-1]
    median = statistics.median(times)
    print(
        f"{label:<34} median {median * 1000:8.1f} ms  (min {min(times) * 1000:7.1f})  "
        f"queries {queries:>3}  redis round trips {trips:>5}  results {results}"
    )
    return median


def prefect_overhead(
    config_path: Path,
    env: dict[str, str],
    bare: Callable[[list[str]], float],
) -> None:
    """One flow run (test server already up) against the bare pass over the same features."""
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    started = time.perf_counter()
    from prefect.testing.utilities import prefect_test_harness

    from flows.controller import rollout_controller

    print(f"import prefect and the flow: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=90), scoped_environ(env):
        print(f"Prefect test server start: {time.perf_counter() - started:.1f} s")
        for count in (1, 1000):
            features = PROVIDERS[:count]
            flow_times = []
            for _ in range(REPEATS):
                began = time.perf_counter()
                state = rollout_controller(
                    features=features,
                    dry_run=False,
                    config_path=str(config_path),
                    return_state=True,
                )
                flow_times.append(time.perf_counter() - began)
                assert state.is_completed(), state.message
            flow = statistics.median(flow_times)
            core = bare(features)
            print(
                f"flow run, {count:>4} feature(s): median {flow:6.2f} s; bare pass {core:6.3f} s; "
                f"Prefect overhead {flow - core:6.2f} s (7 tasks, artifacts, telemetry push)"
            )


REGIONS = ["eu-canary", "eu-west", "eu-central", "us-east", "us-west"]


def segmented_config(features: list[str], order: str) -> str:
    """Every feature on the region-grouped profile, segmented by the five regions."""
    segments = {"by": "region", "values": REGIONS, "order": order}
    document = {
        "profiles": {"gmail": gmail_profile(WINDOW, "region")},
        "features": {name: {"profile": "gmail", "segments": segments} for name in features},
    }
    return yaml.safe_dump(document, sort_keys=False)


def seed_segments(
    client: redis.Redis, features: list[str], percent: str, changed: datetime | None
) -> None:
    """Every segment's keys (and the feature's switches), in one pipeline."""
    pipe = client.pipeline(transaction=False)
    for name in features:
        keys = {"enabled": "true", "internal_only": "false", "paused": "false"}
        pipe.mset({f"flags:{name}:{field}": value for field, value in keys.items()})
        for region in REGIONS:
            prefix = f"flags:{name}:segment:{region}"
            pipe.delete(f"{prefix}:last_change_time", f"{prefix}:last_percent")
            seg = {"rollout_percent": percent, "paused": "false"}
            if changed is not None:
                seg["last_change_time"] = changed.isoformat(timespec="seconds")
            pipe.mset({f"{prefix}:{field}": value for field, value in seg.items()})
    pipe.execute()


def measure_core(
    specs: list[FeatureSpec], store: RedisFlagStore, source: PrometheusSource
) -> tuple[float, float, int, int, dict[str, int]]:
    """One pass: core (CPU) seconds, wall seconds, queries, Redis round trips, results."""
    queries, trips = source.queries_sent, CountingConnection.sent
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = run_pass(specs, store, source, datetime.now(UTC), dry_run=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    results: dict[str, int] = {}
    for outcome in outcomes.values():
        label = str(outcome.result) if not outcome.is_failed else str(outcome.status)
        results[label] = results.get(label, 0) + 1
    return cpu, wall, source.queries_sent - queries, CountingConnection.sent - trips, results


def segmented_scale(root: Path) -> None:
    """1,000 features x 5 segments in one pass, next to 1,000 unsegmented features."""
    port = free_port()
    service = start_process(
        "sample-service",
        [
            sys.executable,
            "-m",
            "deployments.sample_service",
            "--port",
            str(port),
            "--providers",
            "p0001..p1000",
            "--regions",
            ",".join(REGIONS),
        ],
        port,
        root / "sample",
        wait_for_http(f"http://127.0.0.1:{port}/state"),
        f"http://127.0.0.1:{port}",
        timeout=60,
    )
    with ExitStack() as cleanup:
        cleanup.callback(service.stop)
        redis_server = start_redis(root / "redis-segments")
        cleanup.callback(redis_server.stop)
        prometheus = start_prometheus(
            root / "prometheus-segments", scrape_targets={"sample": [f"127.0.0.1:{port}"]}
        )
        cleanup.callback(prometheus.stop)
        client = counted_client(redis_server.url)
        store = RedisFlagStore(client)
        source = PrometheusSource(prometheus.url, timeout=30)
        config = parse_config(segmented_config(PROVIDERS, "parallel"), "segments.yaml")
        features = list(config.features.values())
        units = expand_segments(features)
        plain = list(parse_config(grouped_config(PROVIDERS), "plain.yaml").features.values())
        started = time.perf_counter()
        while True:
            snapshots = source.fetch(units, datetime.now(UTC))
            ready = sum(
                isinstance(r, SloSnapshot) and (r.reading("error_rate").samples or 0) >= 200
                for r in snapshots.values()
            )
            if ready == len(units):
                break
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"only {ready} of {len(units)} segments had readings")
            time.sleep(1)
        print(f"readings for 1000 features x 5 regions after {time.perf_counter() - started:.1f} s")
        print("\nsegmented: 1,000 features x 5 segments in one pass (targets: queries as without")
        print("segments, under 5 s of core time):")
        before = source.queries_sent
        source.fetch(plain, datetime.now(UTC))
        print(f"  1000 features without segments: queries {source.queries_sent - before}")
        for label, percent, changed in (
            ("held by dwell (no writes)", "10", datetime.now(UTC) - timedelta(minutes=1)),
            ("every segment promotes", "0", None),
        ):
            runs = []
            for _ in range(REPEATS):
                seed_segments(client, PROVIDERS, percent, changed)
                runs.append(measure_core(features, store, source))
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            _, _, queries, trips, results = runs[-1]
            print(
                f"  1000 x 5 segments, {label:<26} core {cpu:5.2f} s  wall {wall:5.2f} s  "
                f"queries {queries:>2}  redis round trips {trips:>3}  results {results}"
            )


def main() -> None:
    if "--segments-only" in sys.argv:
        segmented_scale(Path(tempfile.mkdtemp(prefix="controller-scale-segments-")))
        return
    root = Path(tempfile.mkdtemp(prefix="controller-scale-"))
    with ExitStack() as cleanup:
        traffic = cleanup.enter_context(SampleService(providers=PROVIDERS))
        redis_server = start_redis(root / "redis")
        cleanup.callback(redis_server.stop)
        prometheus = start_prometheus(
            root / "prometheus", scrape_targets={"sample": [traffic.host_port]}
        )
        cleanup.callback(prometheus.stop)
        pushgateway = start_pushgateway(root / "pushgateway")
        cleanup.callback(pushgateway.stop)
        config_text = grouped_config(PROVIDERS)
        config_path = root / "rollouts-scale.yaml"
        config_path.write_text(config_text, encoding="utf-8")
        specs = list(parse_config(config_text, str(config_path)).features.values())
        client = counted_client(redis_server.url)
        store = RedisFlagStore(client)
        source = PrometheusSource(prometheus.url, timeout=10)
        waited = wait_for_readings(source, specs)
        print(f"readings for 1000 providers after {waited:.1f} s of waiting\n")

        # holding: every feature within its dwell, so a pass reads and decides but writes nothing
        seed(client, PROVIDERS, "10", datetime.now(UTC) - timedelta(minutes=1))
        print("pass with every feature held by dwell (no writes):")
        for size in SIZES:
            runs = [measure_pass(specs[:size], store, source) for _ in range(REPEATS)]
            report(f"  {size:>4} feature(s)", runs)

        print("\npass where every feature promotes (MGET, then one pipelined batch of CASes):")
        for size in SIZES:
            runs = []
            for _ in range(REPEATS):
                seed(client, PROVIDERS[:size], "0", None)
                runs.append(measure_pass(specs[:size], store, source))
                assert runs[-1][3].get(str(Action.PROMOTE)) == size, runs[-1][3]
            report(f"  {size:>4} feature(s)", runs)

        def bare(features: list[str]) -> float:
            seed(client, features, "10", datetime.now(UTC) - timedelta(minutes=1))
            chosen = specs[: len(features)]
            return statistics.median(measure_pass(chosen, store, source)[0] for _ in range(REPEATS))

        print("\nPrefect overhead (features held by dwell, as above):")
        seed(client, PROVIDERS, "10", datetime.now(UTC) - timedelta(minutes=1))
        env = {
            "REDIS_URL": redis_server.url,
            "PROMETHEUS_BASE_URL": prometheus.url,
            "PUSHGATEWAY_URL": pushgateway.url,
            "ROLLOUT_AUDIT_LOG": str(root / "rollout_log.md"),
        }
        prefect_overhead(config_path, env, bare)
    segmented_scale(root)


if __name__ == "__main__":
    main()
