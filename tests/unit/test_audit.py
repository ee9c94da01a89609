"""The audit trail: the original Markdown line, recommendations, and rebuilding from the stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from rollout_core import audit
from rollout_core.audit import (
    MARKDOWN_HEADER,
    AuditEntry,
    append_rollout_log,
    format_log_line,
    read_audit,
    rebuild_rollout_log,
    render_markdown,
)
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action
from rollout_core.ports import FlagChange

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)


def entry(old: float | None, new: float | None, **fields: object) -> AuditEntry:
    values: dict[str, object] = {"reason": "healthy", "by": "controller", "action": "promote"}
    values.update(fields)
    at = values.pop("time", AT)
    return AuditEntry(at, "google", old, new, **values)  # type: ignore[arg-type]


def test_a_change_keeps_the_original_line_format() -> None:
    line = format_log_line(entry(0, 10, reason="Initial canary", by="controller"))
    assert line == "2025-10-08T15:00:00Z  google  0% -> 10%  reason=Initial canary  by=controller"


def test_a_dry_run_renders_as_a_recommendation_never_as_a_change() -> None:
    line = format_log_line(entry(0, 10, dry_run=True))
    assert line.startswith("2025-10-08T15:00:00Z  google  recommend 0% -> 10%  ")
    assert line.endswith("  dry_run=true")


def test_pause_and_init_lines_name_their_action() -> None:
    assert format_log_line(entry(10, 10, action="pause")).endswith("  action=pause")
    assert "unset -> 0%" in format_log_line(entry(None, 0, action="init"))


def test_a_multiline_reason_stays_on_one_line() -> None:
    assert "reason=a b  by=" in format_log_line(entry(0, 10, reason="a\nb"))


def test_markdown_is_oldest_first_under_a_header() -> None:
    newer = entry(10, 50, time=AT + timedelta(minutes=10), id="2-0")
    older = entry(0, 10, id="1-0")
    text = render_markdown([newer, older])
    assert text.startswith(MARKDOWN_HEADER)
    body = text.removeprefix(MARKDOWN_HEADER).splitlines()
    assert [line.split("  ")[2] for line in body] == ["0% -> 10%", "10% -> 50%"]


def test_append_rollout_log_keeps_the_original_signature_and_writes_a_header_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.md"
    append_rollout_log("google", 0, 10, "Initial canary", path=log)
    append_rollout_log("google", 10, 50, "ramp", "controller", at=AT, path=log)
    text = log.read_text()
    assert text.count("# Rollout log") == 1
    lines = text.removeprefix(MARKDOWN_HEADER).splitlines()
    assert lines[0].endswith("  google  0% -> 10%  reason=Initial canary  by=manual")
    assert lines[1] == "2025-10-08T15:00:00Z  google  10% -> 50%  reason=ramp  by=controller"


def test_append_rollout_log_defaults_to_rollout_log_md_and_never_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(tmp_path / "elsewhere.md"))  # the caller's job
    append_rollout_log("google", 50, 10, "error_rate breach", dry_run=True, at=AT)
    assert "recommend 50% -> 10%" in (tmp_path / "rollout_log.md").read_text()
    assert not (tmp_path / "elsewhere.md").exists()


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def fill(client: fakeredis.FakeRedis) -> None:
    store = RedisFlagStore(client)
    store.init("google", AT)
    store.init("slack", AT)
    later = AT + timedelta(minutes=15)
    store.apply(FlagChange("google", 0, False, 10, "canary", "controller", later, Action.PROMOTE))
    dry = FlagChange("slack", 0, False, 10, "canary", "controller", later, Action.PROMOTE, True)
    store.apply(dry)


def test_read_audit_is_newest_first_and_filters_by_feature(client: fakeredis.FakeRedis) -> None:
    fill(client)
    everything = read_audit(client)
    assert [(e.feature, e.action) for e in everything] == [
        ("slack", "promote"),
        ("google", "promote"),
        ("slack", "init"),
        ("google", "init"),
    ]
    assert everything[0].dry_run and not everything[1].dry_run
    assert [e.action for e in read_audit(client, "google", limit=1)] == ["promote"]


def test_read_audit_pages_through_a_long_stream(
    client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "_PAGE", 3)
    for index in range(10):
        for feature in ("google", "slack"):
            fields = {"time": "2025-10-08T15:00:00Z", "feature": feature, "new_percent": "10"}
            client.xadd(AUDIT_STREAM, {**fields, "reason": str(index)})
    google = read_audit(client, "google", limit=None)
    assert [e.reason for e in google] == [str(i) for i in range(9, -1, -1)]
    assert len(read_audit(client, limit=7)) == 7


def test_the_markdown_log_is_rebuilt_from_the_stream(
    client: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    fill(client)
    log = tmp_path / "rollout_log.md"
    assert rebuild_rollout_log(client, log) == 4
    lines = log.read_text().removeprefix(MARKDOWN_HEADER).splitlines()
    assert lines[0].endswith("action=init")
    assert "google  0% -> 10%  reason=canary  by=controller" in lines[2]
    assert "slack  recommend 0% -> 10%" in lines[3] and lines[3].endswith("dry_run=true")


def test_a_garbled_stream_entry_is_shown_as_malformed_naming_its_id_and_field(
    client: fakeredis.FakeRedis,
) -> None:
    fill(client)
    entry_id = client.xadd(AUDIT_STREAM, {"time": "soon", "feature": "google"})
    entries = read_audit(client)
    assert len(entries) == 5  # the others are all still there
    [garbled] = [e for e in entries if e.id == entry_id]
    assert f"malformed: {AUDIT_STREAM} {entry_id} time is 'soon'" in garbled.problem
    millis = int(entry_id.partition("-")[0])
    assert garbled.time == datetime.fromtimestamp(millis / 1000, UTC)
    assert "(malformed: " in format_log_line(garbled)
    assert all(not e.problem for e in entries if e.id != entry_id)


def test_an_unparsable_new_percent_is_shown_as_the_stream_holds_it() -> None:
    garbled = audit.entry_from_stream(
        "1-0",
        {
            "time": "2025-10-08T15:00:00Z",
            "feature": "g",
            "old_percent": "10",
            "new_percent": "1e400",
        },
    )
    assert garbled.new_percent is None and garbled.change == "10% -> '1e400'"


def test_json_form_has_the_fields_scripts_rely_on() -> None:
    record = entry(0, 10, id="1-0").to_json()
    required = {"time", "feature", "old_percent", "new_percent", "reason", "by", "dry_run"}
    assert required <= set(record)
    assert record["time"] == "2025-10-08T15:00:00Z"


def test_the_log_line_folds_control_characters_in_every_free_text_field() -> None:
    forged = entry(0, 10, reason="ok\u2028next", by="on\x1b[2K\ncall\u202e", action="pause\rx")
    line = format_log_line(forged)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u2028" not in line and "\u202e" not in line and "\x00" not in line
    assert "reason=ok next  by=on [2K call  action=pause x" in line
