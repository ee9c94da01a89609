"""ROLLOUT_AUDIT_RETENTION reaches every store that writes (review 9, R3): the CLI's and the
controller's, and a bad value is refused."""

from __future__ import annotations

import pytest

from rollout_cli.shell import open_store
from rollout_core.bootstrap import Settings, wire
from rollout_core.errors import ConfigError


def test_the_documented_retention_variable_sets_the_retention_of_every_store(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ROLLOUT_AUDIT_RETENTION", "500")
    assert open_store().audit_retention == 500
    assert wire(Settings.from_env()).store.audit_retention == 500  # type: ignore[attr-defined]


def test_a_bad_retention_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_AUDIT_RETENTION", "banana")
    with pytest.raises(ConfigError, match="ROLLOUT_AUDIT_RETENTION"):
        Settings.from_env()
