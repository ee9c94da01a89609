"""Secrets in URLs: what logs, errors and the CLI may show of them."""

from __future__ import annotations

import pytest

from rollout_core.urls import redact_url, url_origin


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/s3cret", "https://hooks.slack.com/…"),
        ("http://u:s3cret@127.0.0.1:8080/hook", "http://127.0.0.1:8080/…"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_a_webhook_shows_only_its_origin(url: str, shown: str) -> None:
    assert url_origin(url) == shown


def test_secret_query_values_are_hidden_and_others_kept() -> None:
    shown = redact_url("https://push:9091/x?token=s3cret&job=a")
    assert "s3cret" not in shown and "job=a" in shown
