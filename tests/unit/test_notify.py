"""`rollout notify`'s destinations: Prefect's own notification blocks, with every token in a
secret field and only an origin in anything the UI or the CLI shows."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deployments.notify import pagerduty_destination, slack_destination, webhook_destination
from rollout_cli.main import app
from rollout_core.errors import ConfigError

HOOK = "https://hooks.example.com/prefect/rollouts"


def test_a_webhooks_token_lives_only_in_a_secret_header_never_in_the_url() -> None:
    destination = webhook_destination(HOOK, token="bearer-s3cret")
    block = destination.block

    assert block.url == HOOK  # no secret: Prefect's server logs it when a delivery fails
    assert destination.shown == "https://hooks.example.com"
    assert "s3cret" not in block.model_dump_json()  # what the API and the UI would show
    assert "s3cret" not in str(block.headers)
    request = block._build_request_args(body="b", subject="s")
    assert request["url"] == HOOK and "s3cret" not in request["url"]
    assert request["headers"] == {"Authorization": "Bearer bearer-s3cret"}
    assert request["json"] == {"subject": "s", "text": "s\nb", "body": "b"}


def test_a_webhook_with_a_query_string_is_refused_as_it_would_be_logged() -> None:
    with pytest.raises(ConfigError, match=r"query string.*--webhook-token") as refused:
        webhook_destination(HOOK + "?token=s3cret")

    assert "s3cret" not in str(refused.value)


def test_a_webhook_with_credentials_in_the_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="--webhook-token"):
        webhook_destination("https://user:pw@hooks.example.com/x")


def test_slack_keeps_its_url_in_a_secret_field() -> None:
    destination = slack_destination("https://hooks.slack.com/services/T0/B1/s3cret")

    assert "s3cret" not in destination.block.model_dump_json()
    assert "s3cret" not in destination.shown


def test_pagerduty_needs_both_keys_and_pages_only() -> None:
    with pytest.raises(ConfigError, match="--pagerduty-api-key"):
        pagerduty_destination("routing-key", "")
    destination = pagerduty_destination("routing-key", "api-key")
    assert destination.pages and "routing-key" not in destination.block.model_dump_json()


def test_notify_without_a_destination_is_bad_input() -> None:
    result = CliRunner().invoke(app, ["notify"])

    assert result.exit_code == 2
    assert "no destination; pass --webhook, --slack, --teams" in result.output
