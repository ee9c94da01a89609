"""`rollout notify`: notifications for failed runs, rollbacks and promotions, created
idempotently through Prefect's own notification blocks and automations.

Destinations: a generic webhook (`CustomWebhookNotificationBlock`, its path, query and token
kept in the block's `secrets`, so the UI shows only the origin), Slack (`SlackWebhook`),
Microsoft Teams (`MicrosoftTeamsWebhook`) and PagerDuty (`PagerDutyWebHook`).

Automations (each re-created in place when it exists):
- rollout-controller-failed: a rollout-controller run ends Failed or Crashed -> every destination;
- rollout-feature-rolled-back: a `rollout.feature.rolled-back` event -> every destination;
- rollout-feature-changed: `rollout.feature.promoted` / `.recommended` -> the chat destinations
  (never PagerDuty: a promotion is not a page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from rollout_core.errors import ConfigError

__all__ = [
    "AUTOMATION_NAME",
    "CHANGED_AUTOMATION",
    "ROLLED_BACK_AUTOMATION",
    "Destination",
    "NotificationSetup",
    "ensure_failure_notification",
    "ensure_notifications",
    "pagerduty_destination",
    "slack_destination",
    "teams_destination",
    "webhook_destination",
]

AUTOMATION_NAME = "rollout-controller-failed"
ROLLED_BACK_AUTOMATION = "rollout-feature-rolled-back"
CHANGED_AUTOMATION = "rollout-feature-changed"
FLOW_NAME = "rollout-controller"
FEATURE_RESOURCES = "rollout.feature.*"

FAILED_SUBJECT = "Rollout controller run {{ flow_run.name }} {{ flow_run.state.name }}"
FAILED_BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} ended {{ flow_run.state.name }}.\n"
    "{{ flow_run.state.message }}"
)
ROLLED_BACK_SUBJECT = (
    "Rollout: {{ event.payload.feature }} rolled back "
    "{{ event.payload.from_percent }}% -> {{ event.payload.to_percent }}%"
)
CHANGED_SUBJECT = (
    "Rollout: {{ event.payload.feature }} "
    "{% if event.payload.dry_run %}recommend {% endif %}{{ event.payload.action }} "
    "{{ event.payload.from_percent }}% -> {{ event.payload.to_percent }}%"
)
FEATURE_BODY = (
    "{{ event.payload.feature }}: {{ event.payload.action }} "
    "{{ event.payload.from_percent }}% -> {{ event.payload.to_percent }}%"
    "{% if event.payload.dry_run %} (dry run: recommended, nothing written){% endif %}\n"
    "Reason: {{ event.payload.reason }}\n"
    "Audit entry: {{ event.payload.audit_id }} (rollout audit {{ event.payload.feature }})"
)
# backwards-compatible names for the failure notification
SUBJECT, BODY = FAILED_SUBJECT, FAILED_BODY


@dataclass(frozen=True)
class Destination:
    """A notification block to save under `block_name`; `pages` is True for a pager, which
    gets failures and rollbacks only."""

    kind: str
    block_name: str
    block: Any
    shown: str  # what may be printed: an origin, never a token
    pages: bool = False


@dataclass(frozen=True)
class NotificationSetup:
    block_document_id: UUID  # the first destination's block
    automation_id: UUID  # the failure automation
    created: bool  # False when the failure automation existed and was updated in place
    automations: tuple[tuple[str, UUID, bool], ...] = ()  # (name, id, created) of each


def webhook_destination(url: str, token: str | None = None) -> Destination:
    """A generic webhook, POSTed to `url` as given, which is no secret: Prefect's server logs
    the rendered URL of every failed delivery (httpx's error), whatever the block hides in the
    UI. So a query string (where tokens usually sit) or user:password@ is refused, and the
    receiver authenticates by `token`, sent as `Authorization: Bearer ...` from the block's
    secrets (headers are never logged)."""
    parts = _http_url("--webhook", url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "--webhook carries credentials in the URL; pass the token with --webhook-token"
        )
    origin = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    if parts.query or parts.fragment:
        raise ConfigError(
            f"--webhook {origin}{parts.path or '/'}?... has a query string; Prefect's server "
            "logs the URL of a failed delivery, so a token there would be in its log. Give the "
            "receiver a URL without one and pass its token with --webhook-token (sent as "
            "`Authorization: Bearer ...`)"
        )
    secrets: dict[str, str] = {}
    headers = None
    if token:
        secrets["webhook_token"] = token
        headers = {"Authorization": "Bearer {{webhook_token}}"}
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="rollout-controller",
        url=urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")),
        method="POST",
        json_data={"subject": "{{subject}}", "text": "{{subject}}\n{{body}}", "body": "{{body}}"},
        headers=headers,
        secrets=secrets,
    )
    return Destination("webhook", "rollout-notify-webhook", block, origin)


def slack_destination(url: str) -> Destination:
    parts = _http_url("--slack", url)
    from prefect.blocks.notifications import SlackWebhook

    block = SlackWebhook(url=url)  # a SecretStr field: the UI masks it
    return Destination("slack", "rollout-notify-slack", block, f"Slack ({parts.hostname})")


def teams_destination(url: str) -> Destination:
    parts = _http_url("--teams", url)
    from prefect.blocks.notifications import MicrosoftTeamsWebhook

    block = MicrosoftTeamsWebhook(url=url)  # a SecretStr field: the UI masks it
    return Destination("teams", "rollout-notify-teams", block, f"Teams ({parts.hostname})")


def pagerduty_destination(integration_key: str, api_key: str) -> Destination:
    if not integration_key.strip() or not api_key.strip():
        raise ConfigError(
            "PagerDuty needs both --pagerduty-integration-key (the Events API v2 routing key) "
            "and --pagerduty-api-key"
        )
    from prefect.blocks.notifications import PagerDutyWebHook

    block = PagerDutyWebHook(
        integration_key=integration_key,
        api_key=api_key,
        notify_type="failure",
        component="rollout-controller",
    )
    return Destination("pagerduty", "rollout-notify-pagerduty", block, "PagerDuty", pages=True)


def _http_url(option: str, url: str) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        from rollout_core.urls import url_origin

        raise ConfigError(
            f"{option} {url_origin(url)!r} is not an http(s) URL; "
            "pass e.g. https://hooks.example.com/..."
        )
    return parts


def ensure_notifications(destinations: list[Destination]) -> NotificationSetup:
    """Save every destination's block, then create or update the three automations; running
    it twice changes nothing more. Without a chat destination, rollout-feature-changed is
    removed (a pager is not told about promotions)."""
    if not destinations:
        raise ConfigError(
            "no destination; pass --webhook, --slack, --teams or the --pagerduty-* keys"
        )
    from deployments.prefect_api import prefect_api

    with prefect_api() as client:  # the block saves inherit its timeout
        saved = [(d, d.block.save(d.block_name, overwrite=True)) for d in destinations]
        return _ensure_automations(client, saved)


def _ensure_automations(client: Any, saved: list[tuple[Destination, UUID]]) -> NotificationSetup:
    every = [block_id for _, block_id in saved]
    chat = [block_id for d, block_id in saved if not d.pages]
    wanted = [
        (AUTOMATION_NAME, _failed_automation(every)),
        (
            ROLLED_BACK_AUTOMATION,
            _feature_automation(
                ROLLED_BACK_AUTOMATION,
                "Notify when the controller rolls a feature back.",
                {"rollout.feature.rolled-back"},
                every,
                ROLLED_BACK_SUBJECT,
            ),
        ),
        (
            CHANGED_AUTOMATION,
            _feature_automation(
                CHANGED_AUTOMATION,
                "Notify when the controller promotes a feature or recommends a change (dry run).",
                {"rollout.feature.promoted", "rollout.feature.recommended"},
                chat,
                CHANGED_SUBJECT,
            )
            if chat
            else None,
        ),
    ]
    results = []
    for name, automation in wanted:
        existing = client.read_automations_by_name(name)
        for extra in existing[1:] if automation is not None else existing:
            client.delete_automation(extra.id)  # duplicates of an earlier race, or unwanted
        if automation is None:
            continue
        if existing:
            client.update_automation(existing[0].id, automation)
            results.append((name, existing[0].id, False))
        else:
            results.append((name, automation.create().id, True))
    _, failed_id, created = results[0]
    return NotificationSetup(every[0], failed_id, created, tuple(results))


def ensure_failure_notification(webhook_url: str, slack: bool = False) -> NotificationSetup:
    """The failure notification alone to one webhook (or Slack) URL: the earlier interface."""
    destination = slack_destination(webhook_url) if slack else webhook_destination(webhook_url)
    return ensure_notifications([destination])


def _failed_automation(block_ids: list[UUID]) -> Any:
    from prefect.automations import Automation, EventTrigger
    from prefect.events.schemas.automations import Posture

    return Automation(
        name=AUTOMATION_NAME,
        description="Notify when a rollout-controller flow run fails or crashes.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=_notify_each(block_ids, FAILED_SUBJECT, FAILED_BODY),
    )


def _feature_automation(
    name: str, description: str, events: set[str], block_ids: list[UUID], subject: str
) -> Any:
    from prefect.automations import Automation, EventTrigger
    from prefect.events.schemas.automations import Posture

    return Automation(
        name=name,
        description=description,
        trigger=EventTrigger(
            expect=events,
            match={"prefect.resource.id": FEATURE_RESOURCES},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=_notify_each(block_ids, subject, FEATURE_BODY),
    )


def _notify_each(block_ids: list[UUID], subject: str, body: str) -> list[Any]:
    from prefect.automations import SendNotification

    return [
        SendNotification(block_document_id=block_id, subject=subject, body=body)
        for block_id in block_ids
    ]
