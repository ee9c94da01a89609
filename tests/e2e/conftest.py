"""The deployed product, once per suite: `prefect server start`, a process worker on
`rollout-pool`, real Redis / Prometheus / Pushgateway with the Gmail sample service, the
repository's prefect.yaml deployed by `deployments.deploy.deploy_all`, and a local webhook
receiver for the failure notification. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployments.sample_service import SampleService
from deployments.servers import RunningServer, start_prometheus, start_pushgateway, start_redis
from deployments.stack import POOL, start_prefect_server, start_worker, stop_process_group
from tests.integration.conftest import readings_ready, write_config

REPO_ROOT = Path(__file__).resolve().parents[2]


# The files by their time, longest first (measured on a 2-core machine: the soak's share and the
# HA stack take three minutes each): two xdist workers take files in this order (see the
# Makefile), so the longest file never starts last and leaves one worker idle at the end.
# test_kill_switch.py comes after the other two files on the session's Prefect server: its
# `rollout serve` tests re-register the controller as a served deployment (no code for a
# worker to fetch), so on a worker that ran it, only files with servers of their own follow.
HEAVIEST_FIRST = (
    "test_soak.py",
    "test_ha_topology.py",
    "test_deployed_controller.py",
    "test_fast_abort.py",
    "test_kill_switch.py",
    "test_stack.py",
    "test_demo.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e files heaviest first (one not listed last), after any other layer's tests;
    tests keep their order within a file."""
    here = Path(__file__).parent
    rank = {name: position for position, name in enumerate(HEAVIEST_FIRST)}

    def order(item: pytest.Item) -> int:
        return rank.get(item.path.name, len(rank)) if item.path.parent == here else -1

    items.sort(key=order)


@dataclass
class Stack:
    """The servers a deployed controller talks to, and the environment that names them."""

    redis: RunningServer
    prometheus: RunningServer
    pushgateway: RunningServer
    traffic: SampleService
    config_path: Path
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` with its own PREFECT_HOME; the scheduler loops every
    second, so a schedule that was wrongly re-activated would show runs at once."""
    scheduler_every_second = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    }
    server = start_prefect_server(
        tmp_path_factory.mktemp("prefect-server-home"), ui=False, extra_env=scheduler_every_second
    )
    yield server.url
    stop_process_group(server.process, signal.SIGTERM)


@pytest.fixture(scope="session")
def prefect_client_env(prefect_api: str) -> Iterator[str]:
    """This process and its children (`prefect deploy`) talk to the e2e server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_API_URL: prefect_api}):
        patch.setenv("PREFECT_API_URL", prefect_api)
        yield prefect_api


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-stack")
    with contextlib.ExitStack() as cleanup:
        traffic = cleanup.enter_context(SampleService(providers=["google"]))
        redis_server = start_redis(root / "redis")
        cleanup.callback(redis_server.stop)
        pushgateway = start_pushgateway(root / "pushgateway")
        cleanup.callback(pushgateway.stop)
        prometheus = start_prometheus(
            root / "prometheus", scrape_targets={"sample": [traffic.host_port]}
        )
        cleanup.callback(prometheus.stop)
        config = write_config(root, {"google": None})
        env = {
            "REDIS_URL": redis_server.url,
            "PROMETHEUS_BASE_URL": prometheus.url,
            "PUSHGATEWAY_URL": pushgateway.url,
            "ROLLOUT_AUDIT_LOG": str(root / "rollout_log.md"),
            "ROLLOUT_FETCH_BACKOFF_SECONDS": "0.05",
        }
        yield Stack(redis_server, prometheus, pushgateway, traffic, config, env)


@pytest.fixture(scope="session")
def stack_ready(stack: Stack, deployed: Any) -> Stack:
    """The stack once Prometheus can judge `google` (its first ~7 s overlap the deploy)."""
    readings_ready(stack.prometheus.url, ["google"])
    return stack


@pytest.fixture(scope="session")
def deployed(prefect_client_env: str, stack: Stack) -> Any:
    """prefect.yaml deployed from the repository root, as `rollout deploy` does it."""
    from deployments.deploy import deploy_all

    return deploy_all(REPO_ROOT, work_pool=POOL)


@pytest.fixture(scope="session")
def worker(
    deployed: Any, stack: Stack, prefect_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """`prefect worker start --pool rollout-pool`, polling every second, with the stack's
    connection settings in its environment (flow runs inherit them)."""
    running = start_worker(tmp_path_factory.mktemp("prefect-worker-home"), prefect_api, stack.env)
    yield running.process
    stop_process_group(running.process, signal.SIGINT)  # a background worker ignores SIGTERM


@dataclass
class Delivery:
    arrived_at: float  # time.time() when the POST arrived
    body: dict[str, Any]
    authorization: str | None = None  # the Authorization header, when one was sent


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 recording every POST with its arrival time."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.deliveries.append(
                    Delivery(
                        time.time(), json.loads(raw or b"{}"), self.headers.get("Authorization")
                    )
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
