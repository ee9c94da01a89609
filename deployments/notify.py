"""`rollout notify`: a notification when a controller run fails, created idempotently.

One notification block (a generic webhook or Slack) and one automation: on a
`prefect.flow-run.Failed` or `Crashed` event of the rollout-controller flow, send the run's
state message, which names each failed feature and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

__all__ = ["AUTOMATION_NAME", "BLOCK_NAME", "NotificationSetup", "ensure_failure_notification"]

AUTOMATION_NAME = "rollout-controller-failed"
BLOCK_NAME = "rollout-controller-failures"
FLOW_NAME = "rollout-controller"
SUBJECT = "Rollout controller run {{ flow_run.name }} {{ flow_run.state.name }}"
BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} ended {{ flow_run.state.name }}.\n"
    "{{ flow_run.state.message }}"
)


@dataclass(frozen=True)
class NotificationSetup:
    block_document_id: UUID
    automation_id: UUID
    created: bool  # False when an existing automation was updated in place


def _block(webhook_url: str, slack: bool) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if slack:
        return SlackWebhook(url=webhook_url)
    return CustomWebhookNotificationBlock(
        name="rollout-controller",
        url=webhook_url,
        method="POST",
        json_data={"subject": "{{subject}}", "text": "{{subject}}\n{{body}}", "body": "{{body}}"},
    )


def ensure_failure_notification(webhook_url: str, slack: bool = False) -> NotificationSetup:
    """Create or update the block and the automation; running it twice changes nothing more."""
    from prefect.automations import Automation, EventTrigger, SendNotification
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import Posture

    block_document_id = _block(webhook_url, slack).save(BLOCK_NAME, overwrite=True)
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Notify when a rollout-controller flow run fails or crashes.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        for extra in existing[1:]:  # an earlier race left duplicates: keep one
            client.delete_automation(extra.id)
        if existing:
            client.update_automation(existing[0].id, automation)
            return NotificationSetup(block_document_id, existing[0].id, created=False)
        created = automation.create()
        return NotificationSetup(block_document_id, created.id, created=True)
