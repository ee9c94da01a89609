"""Prefect's client for the operator commands, with a short timeout and one retry.

Prefect's defaults (60 s per request, 5 retries) leave `rollout controller pause` hanging for
minutes on an API that accepts connections and never answers. Inside `prefect_api()` every
request, including those of clients Prefect opens itself (blocks, automations), gives up after
`timeout` seconds and is retried once (a 503 from a busy server deserves that); a timeout
becomes PrefectApiTimeout, which names the URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PREFECT_API_TIMEOUT_SEC", "PrefectApiTimeout", "api_env", "prefect_api"]

PREFECT_API_TIMEOUT_SEC = 10.0
PREFECT_API_RETRIES = 1


class PrefectApiTimeout(RuntimeError):
    """The Prefect API took longer than the timeout to answer one request."""

    def __init__(self, url: str, timeout: float) -> None:
        from rollout_core.urls import redact_url

        super().__init__(
            f"the Prefect API at {redact_url(url)} did not answer within {timeout:g}s "
            f"({PREFECT_API_RETRIES + 1} tries); "
            "is it running and healthy (`curl $PREFECT_API_URL/health`)?"
        )
        self.url, self.timeout = url, timeout


def api_env(timeout: float | None = None) -> dict[str, str]:
    """The request timeout for a `prefect` subprocess, as an environment variable (its own
    retries are kept: `prefect deploy` makes many requests and rides out a 503)."""
    timeout = PREFECT_API_TIMEOUT_SEC if timeout is None else timeout
    return {"PREFECT_API_REQUEST_TIMEOUT": f"{timeout:g}"}


@contextmanager
def prefect_api(timeout: float | None = None) -> Iterator[Any]:
    """Prefect's sync client for PREFECT_API_URL, every request limited to `timeout` s
    (default PREFECT_API_TIMEOUT_SEC)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    timeout = PREFECT_API_TIMEOUT_SEC if timeout is None else timeout
    limits = {PREFECT_API_REQUEST_TIMEOUT: timeout, PREFECT_CLIENT_MAX_RETRIES: PREFECT_API_RETRIES}
    with temporary_settings(updates=limits):
        try:
            with get_client(sync_client=True) as client:
                yield client
        except httpx.TimeoutException as error:
            raise PrefectApiTimeout(str(PREFECT_API_URL.value() or "?"), timeout) from error
