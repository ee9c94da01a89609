"""The alert bridge: Alertmanager's webhook receiver that turns alerts into Prefect events.

`POST /alerts` takes an Alertmanager webhook payload (version 4). Each alert with a
`rollout_feature` label becomes a `rollout.alert.firing` (or `.resolved`) event about the
resource `rollout.feature.<name>`, sent to the Prefect API (`POST /api/events`); the abort
deployment's trigger turns a firing one into a run. Callers authenticate with a bearer token
(ROLLOUT_BRIDGE_TOKEN). A bad request is refused with a 4xx naming what was wrong (401 token,
413 too large, 400 not JSON, 422 not an Alertmanager payload or an unknown feature); a Prefect
API that does not take the events is a 503, so Alertmanager sends the group again.
`GET /metrics` exposes its counters; `GET /-/healthy` answers 200.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rollout_core.abort import InvalidAlertPayload, alert_event, parse_webhook
from rollout_core.errors import ConfigError

__all__ = ["ABORT_DEPLOYMENT", "BridgeMetrics", "EventSender", "PrefectEventSender", "create_app"]

ABORT_DEPLOYMENT = "rollout-controller/abort"  # prefect.yaml: the deployment the events trigger

log = logging.getLogger("rollout.alert_bridge")
EventSender = Callable[[Sequence[dict[str, Any]]], Any]  # an awaitable that sends the events


@dataclass(frozen=True)
class BridgeMetrics:
    """The bridge's own counters, in its own registry (served on /metrics)."""

    registry: CollectorRegistry
    received: Counter
    emitted: Counter
    rejected: Counter

    @classmethod
    def create(cls) -> BridgeMetrics:
        registry = CollectorRegistry()
        return cls(
            registry,
            Counter(
                "rollout_bridge_requests_received",
                "Webhook requests received from Alertmanager",
                registry=registry,
            ),
            Counter(
                "rollout_bridge_events_emitted",
                "Prefect events sent, by event name",
                ["event"],
                registry=registry,
            ),
            Counter(
                "rollout_bridge_requests_rejected",
                "Webhook requests refused, by reason",
                ["reason"],
                registry=registry,
            ),
        )


class PrefectEventSender:
    """Sends events to the Prefect API's `POST /api/events` (a JSON list of events)."""

    def __init__(self, api_url: str, timeout: float = 5.0) -> None:
        self._url = api_url.rstrip("/") + "/events"
        self._client = httpx.AsyncClient(timeout=timeout)

    async def __call__(self, events: Sequence[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        body = [{"id": str(uuid.uuid4()), "occurred": now, **event} for event in events]
        response = await self._client.post(self._url, json=body)
        response.raise_for_status()


def _refuse(metrics: BridgeMetrics, status: int, reason: str, detail: str) -> JSONResponse:
    metrics.rejected.labels(reason).inc()
    log.warning("refused (%s): %s", reason, detail)
    return JSONResponse({"error": reason, "detail": detail}, status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` bytes (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    token: str,
    features: Collection[str],
    send: EventSender,
    *,
    max_body_bytes: int,
    metrics: BridgeMetrics | None = None,
) -> Starlette:
    """The bridge as an ASGI app. `features`: the configured ones (any other is refused)."""
    if not token:
        raise ConfigError(
            "ROLLOUT_BRIDGE_TOKEN is empty; the alert bridge needs the bearer token Alertmanager "
            "sends (http_config.authorization.credentials in alertmanager.yml)"
        )
    counters = metrics or BridgeMetrics.create()
    expected = f"Bearer {token}".encode()
    known = frozenset(features)

    async def alerts(request: Request) -> Response:
        counters.received.inc()
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _refuse(counters, 401, "unauthorized", "missing or wrong bearer token")
        raw = await _read_limited(request, max_body_bytes)
        if raw is None:
            detail = f"body over {max_body_bytes} bytes (ROLLOUT_BRIDGE_MAX_BODY_BYTES)"
            return _refuse(counters, 413, "too_large", detail)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _refuse(counters, 400, "malformed_json", f"the body is not JSON: {exc}")
        try:
            found = parse_webhook(body)
        except InvalidAlertPayload as exc:
            return _refuse(counters, 422, "invalid_payload", str(exc))
        unknown = sorted({a.feature for a in found if a.feature not in known})
        if unknown:
            detail = (
                f"unknown feature(s) {', '.join(unknown)} in rollout_feature; configured: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
            return _refuse(counters, 422, "unknown_feature", detail)
        events = [alert_event(a) for a in found]
        if events:
            try:
                await send(events)
            except (httpx.HTTPError, OSError) as exc:
                detail = f"the Prefect API did not take the events: {exc}; Alertmanager retries"
                return _refuse(counters, 503, "emit_failed", detail)
        for event in events:
            counters.emitted.labels(event["event"]).inc()
        for a in found:
            log.info("%s %s for %s (%s)", a.status, a.name, a.feature, a.episode)
        return JSONResponse({"emitted": len(events), "ignored": len(body["alerts"]) - len(found)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(counters.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthy(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return Starlette(
        routes=[
            Route("/alerts", alerts, methods=["POST"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/-/healthy", healthy, methods=["GET"]),
        ]
    )


def serve(host: str, port: int, config_path: str) -> None:
    """Serve the bridge with uvicorn until interrupted (`rollout alert-bridge`)."""
    import uvicorn
    from prefect.settings import get_current_settings

    from rollout_core.bootstrap import Settings
    from rollout_core.config import load_config

    settings = Settings.from_env()
    features = load_config(config_path).features
    api_url = get_current_settings().api.url
    if not api_url:
        raise ConfigError(
            "PREFECT_API_URL is not set; the bridge sends its events to that Prefect server, "
            "e.g. http://127.0.0.1:4200/api"
        )
    app = create_app(
        settings.bridge_token,
        features,
        PrefectEventSender(str(api_url)),
        max_body_bytes=settings.bridge_max_body_bytes,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
