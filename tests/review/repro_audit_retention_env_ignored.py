"""FAILING REPRO (review 9, defect R10): ROLLOUT_AUDIT_RETENTION, documented in docs/cli.md and
docs/architecture.md as the audit stream's retention (issue 9 item 11), is read nowhere.

`rollout_cli.shell.open_store` looks for `Settings.audit_retention` with getattr (a field
"the bootstrap engineer adds"), which does not exist, and `bootstrap.wire` (the controller's
store) passes no retention at all: both trim at the default 100000, whatever the variable
says, and a bad value (`banana`) is not refused.
"""

from __future__ import annotations

import pytest

from rollout_cli.shell import open_store
from rollout_core.bootstrap import Settings, wire
from rollout_core.errors import ConfigError


def test_the_documented_retention_variable_sets_the_retention(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ROLLOUT_AUDIT_RETENTION", "500")
    # observed: 100000 and 100000
    assert open_store().audit_retention == 500
    assert wire(Settings.from_env()).store.audit_retention == 500  # type: ignore[attr-defined]


def test_a_bad_retention_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLOUT_AUDIT_RETENTION", "banana")
    with pytest.raises(ConfigError, match="ROLLOUT_AUDIT_RETENTION"):  # observed: no error
        Settings.from_env()
