"""The operator commands against a Prefect API that accepts connections and never answers:
each fails with exit 1 and "did not answer within Ns" instead of hanging."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import deployments.prefect_api
from rollout_cli.main import app

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hung_prefect_api(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[str]:
    """PREFECT_API_URL of a listener that accepts and never answers; a 0.5 s API timeout."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])  # read nothing, answer nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    monkeypatch.setattr(deployments.prefect_api, "PREFECT_API_TIMEOUT_SEC", 0.5)
    monkeypatch.setenv("REDIS_URL", redis_url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield url
    listener.close()
    for connection in held:
        connection.close()


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_controller_pause_on_a_hung_prefect_api_fails_fast_naming_the_url(
    hung_prefect_api: str,
) -> None:
    result = rollout("controller", "pause", "--reason", "incident")

    assert result.exit_code == 1, result.output
    assert f"the Prefect API at {hung_prefect_api} did not answer within 0.5s" in result.output


def test_controller_status_and_deploy_on_a_hung_prefect_api_fail_fast(
    hung_prefect_api: str,
) -> None:
    status = rollout("controller", "status")
    deploy = rollout("deploy", "--project-dir", str(REPO_ROOT))

    for result in (status, deploy):
        assert result.exit_code == 1, result.output
        assert "did not answer within 0.5s" in result.output
