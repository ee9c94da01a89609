"""The `rollout` CLI on fakeredis: exit codes 0/1/2, one clear line per error, JSON on stdout."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from rollout_cli import flag_commands
from rollout_cli.formatting import (
    format_duration,
    remaining,
    set_message,
    status_row,
    status_table,
)
from rollout_cli.main import app
from rollout_core import redis_connection
from rollout_core.audit import MARKDOWN_HEADER, read_audit, render_markdown
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import Action, FlagState
from rollout_core.ports import ApplyResult, FlagChange

AT = datetime(2025, 10, 8, 15, 0, tzinfo=UTC)
CONFIG = """\
defaults: {dwell: 30m, cooldown: 2h}
features:
  google:
    promote_without_traffic: true
    slos: [{name: latency, query: up, max: 1}]
"""


class Cli:
    """Runs `rollout` in-process against one fake Redis, at a fixed time."""

    def __init__(self, fake: fakeredis.FakeRedis, connects: list[str | None]) -> None:
        self.redis = fake
        self.connects = connects
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(app, list(args))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    fake = fakeredis.FakeRedis(decode_responses=True)
    connects: list[str | None] = []

    def connect(url: str | None = None) -> fakeredis.FakeRedis:
        connects.append(url)
        return fake

    monkeypatch.setattr(redis_connection, "connect", connect)
    monkeypatch.setattr(flag_commands, "now", lambda: AT)
    monkeypatch.chdir(tmp_path)
    return Cli(fake, connects)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["set", "google", "abc", "--reason", "x"], "percent 'abc' is not a number"),
        (["set", "google", "150", "--reason", "x"], "percent '150' is out of range"),
        (["set", "google", "NaN", "--reason", "x"], "percent 'NaN' is not a finite number"),
        (["set", "Google!", "10", "--reason", "x"], "feature name 'Google!' is invalid"),
        (["set", "google", "10"], "--reason is missing"),
        (["set", "google", "10", "--reason", "  "], "--reason is missing or empty"),
        (["audience", "google", "everyone"], "audience 'everyone' is invalid"),
        (["audit", "--limit", "0"], "--limit 0 is invalid"),
        (["status", "google:paused"], "feature name 'google:paused' is invalid"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    cli: Cli, args: list[str], named: str
) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and named in result.stderr
    assert "expected" in result.stderr or "e.g." in result.stderr  # the fix, too
    assert result.stdout == ""
    assert cli.connects == [] and cli.redis.keys("*") == []


def test_init_then_set_changes_the_percent_and_audits_it(cli: Cli) -> None:
    assert cli("init", "google").stdout.startswith("google: initialised enabled=true")
    result = cli("set", "google", "10", "--reason", "canary", "--by", "alice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("google: 0% -> 10% (audit ")
    entry = cli.redis.xrange(AUDIT_STREAM)[-1][1]
    assert (entry["new_percent"], entry["reason"], entry["by"]) == ("10", "canary", "alice")


def test_init_twice_says_nothing_was_written(cli: Cli) -> None:
    cli("init", "google")
    assert cli("init", "google").stdout == "google: already initialised; nothing written\n"


def test_set_refuses_a_feature_that_was_never_initialised(cli: Cli) -> None:
    result = cli("set", "google", "10", "--reason", "canary")
    assert result.exit_code == 2 and "run `rollout init google` if it is new" in result.stderr
    assert cli.redis.get("flags:google:rollout_percent") is None


@pytest.mark.parametrize(
    "args",
    [
        ["set", "googel", "0", "--reason", "incident"],
        ["pause", "googel"],
        ["resume", "googel"],
        ["audience", "googel", "public"],
    ],
)
def test_every_write_to_a_mistyped_feature_exits_2_naming_the_known_ones(
    cli: Cli, args: list[str]
) -> None:
    cli("init", "google")
    keys_before = sorted(cli.redis.keys("*"))
    entries_before = cli.redis.xlen(AUDIT_STREAM)
    result = cli(*args)
    assert result.exit_code == 2
    assert "feature 'googel' is not initialised" in result.stderr
    assert "known: google; run `rollout init googel` if it is new" in result.stderr
    assert sorted(cli.redis.keys("*")) == keys_before
    assert cli.redis.xlen(AUDIT_STREAM) == entries_before


def test_set_repairs_a_corrupt_percent_and_audits_the_old_raw_value(cli: Cli) -> None:
    cli("init", "google")
    cli.redis.set("flags:google:rollout_percent", "fifty")
    result = cli("set", "google", "0", "--reason", "repair")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("google: 'fifty' (unparsable) -> 0% (audit ")
    assert cli.redis.get("flags:google:rollout_percent") == "0"
    entry = cli.redis.xrange(AUDIT_STREAM)[-1][1]
    assert (entry["old_percent"], entry["new_percent"]) == ("fifty", "0")
    assert cli.redis.get("flags:google:last_percent") is None  # the typo is not history


@pytest.mark.parametrize(("typed", "stored"), [(" 10 % ", "10"), ("0.5%", "0.5"), ("10", "10")])
def test_the_percent_argument_takes_a_trailing_percent_sign_and_spaces(
    cli: Cli, typed: str, stored: str
) -> None:
    cli("init", "google")
    assert cli("set", "google", typed, "--reason", "x").exit_code == 0
    assert cli.redis.get("flags:google:rollout_percent") == stored


@pytest.mark.parametrize("typed", ["1e1", "1_0", "+10", "nan%"])
def test_the_percent_argument_refuses_what_the_gate_refuses(cli: Cli, typed: str) -> None:
    result = cli("set", "google", typed, "--reason", "x")
    assert result.exit_code == 2 and f"percent {typed!r}" in result.stderr
    assert cli.redis.keys("*") == []


def test_by_defaults_to_the_os_user(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "alice")
    cli("init", "google")
    cli("set", "google", "10", "--reason", "canary")
    cli("pause", "google")
    cli("audience", "google", "public")
    by = [fields["by"] for _, fields in cli.redis.xrange(AUDIT_STREAM)]
    assert by == ["alice", "alice", "alice", "alice"]


def test_by_falls_back_to_manual_without_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    from rollout_cli import shell

    monkeypatch.delenv("USER", raising=False)

    def no_login() -> str:
        raise OSError("no controlling terminal")

    monkeypatch.setattr(shell.os, "getlogin", no_login)
    assert shell.actor(None) == "manual"
    assert shell.actor(" bob ") == "bob"


def test_every_audited_write_appends_its_line_to_the_markdown_log(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "ops-log.md"
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(log))
    cli("init", "google", "--by", "alice")
    cli("set", "google", "10", "--reason", "canary", "--by", "alice")
    cli("pause", "google", "--by", "alice")
    cli("resume", "google", "--by", "alice")
    cli("audience", "google", "public", "--by", "alice")
    cli("pause", "google", "--by", "alice")
    cli("pause", "google", "--by", "alice")  # already paused: no entry, no line
    lines = log.read_text(encoding="utf-8").removeprefix(MARKDOWN_HEADER).splitlines()
    assert [line.split("  ")[-1] for line in lines] == [
        "action=init",
        "by=alice",
        "action=pause",
        "action=resume",
        "action=audience",
        "action=pause",
    ]
    assert (
        lines
        == render_markdown(read_audit(cli.redis, limit=None))
        .removeprefix(MARKDOWN_HEADER)
        .splitlines()
    )


def test_a_log_that_cannot_be_written_is_a_warning_and_the_change_stands(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(tmp_path / "missing-dir" / "log.md"))
    cli("init", "google")
    result = cli("set", "google", "10", "--reason", "canary")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "rollout audit --rebuild-log" in result.stderr
    assert cli.redis.get("flags:google:rollout_percent") == "10"


def test_an_unknown_outcome_exits_1_and_names_the_command_that_checks_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init", "google")
    message = (
        "outcome unknown: ...; once Redis answers, `rollout audit google` shows whether it was"
    )

    def lost(*_: object, **__: object) -> ApplyResult:
        return ApplyResult(False, False, None, False, unknown=True, message=message)

    monkeypatch.setattr(RedisFlagStore, "set_percent", lost)
    result = cli("set", "google", "10", "--reason", "canary")
    assert result.exit_code == 1
    assert result.stdout == f"google: {message}\n"


def test_a_lost_race_exits_1_and_says_nothing_was_written(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init", "google")

    def raced(*_: object, **__: object) -> ApplyResult:
        return ApplyResult(False, True, 50, False)

    monkeypatch.setattr(RedisFlagStore, "set_percent", raced)
    result = cli("set", "google", "10", "--reason", "canary")
    assert result.exit_code == 1 and "nothing written" in result.stdout


def test_pause_resume_and_audience_print_what_changed(cli: Cli) -> None:
    cli("init", "google")
    cli("set", "google", "50", "--reason", "ramp")
    assert "paused; the controller makes no change" in cli("pause", "google").stdout
    assert "already paused" in cli("pause", "google").stdout
    assert "resumed" in cli("resume", "google").stdout
    result = cli("audience", "google", "public")
    assert result.stdout == "google: audience public; rollout_percent 50% -> 0%\n"
    assert cli.redis.get("flags:google:internal_only") == "false"


def test_status_json_reports_flags_and_time_left_from_the_config(cli: Cli) -> None:
    Path("rollouts.yaml").write_text(CONFIG)
    RedisFlagStore(cli.redis).init("google", AT - timedelta(hours=1))
    store = RedisFlagStore(cli.redis)
    store.set_percent("google", 50, "ramp", at=AT - timedelta(minutes=10))
    store.set_percent("google", 10, "breach", at=AT - timedelta(minutes=10))
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["feature"], row["percent"], row["internal_only"], row["paused"]) == (
        "google",
        10,
        True,
        False,
    )
    assert row["dwell_remaining_seconds"] == 20 * 60  # 30m dwell, changed 10m ago
    assert row["cooldown_remaining_seconds"] == 110 * 60  # 2h cooldown, rolled back 10m ago
    assert row["timing_from"] == "rollouts.yaml"


def test_status_without_a_config_uses_the_defaults_and_says_so(cli: Cli) -> None:
    RedisFlagStore(cli.redis).init("google", AT)
    result = cli("status", "google", "--json")
    assert json.loads(result.stdout)[0]["dwell_seconds"] == 15 * 60
    assert "rollouts.yaml not found; using the default dwell 15m and cooldown 1h" in result.stderr


def test_status_names_a_bad_flag_value_and_exits_2(cli: Cli) -> None:
    cli.redis.set("flags:google:rollout_percent", "ten")
    result = cli("status", "google")
    assert result.exit_code == 2
    assert "flags:google:rollout_percent is 'ten'; expected a number from 0 to 100" in result.stderr


def test_audit_json_is_one_array_with_recommendations_marked(cli: Cli) -> None:
    store = RedisFlagStore(cli.redis)
    store.init("google", AT)
    dry = FlagChange("google", 0, False, 10, "canary", "controller", AT, Action.PROMOTE, True)
    store.apply(dry)
    result = cli("audit", "google", "--json", "--limit", "5")
    entries = json.loads(result.stdout)
    assert [(e["action"], e["dry_run"]) for e in entries] == [("promote", True), ("init", False)]
    required = {"time", "feature", "old_percent", "new_percent", "reason", "by", "dry_run"}
    assert all(required <= set(e) for e in entries)


def test_audit_rebuild_log_rewrites_the_markdown_from_the_stream(cli: Cli, tmp_path: Path) -> None:
    cli("init", "google")
    cli("set", "google", "10", "--reason", "canary")
    log = tmp_path / "rollout_log.md"
    log.write_text("a hand-edited, damaged copy\n", encoding="utf-8")

    result = cli("audit", "--rebuild-log", str(log))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"rewrote {log} from rollout:audit: 2 entries\n"
    lines = log.read_text(encoding="utf-8").splitlines()
    assert "damaged" not in log.read_text(encoding="utf-8")
    assert lines[-1].endswith("google  0% -> 10%  reason=canary  by=manual")


def test_audit_rebuild_log_refuses_a_feature_since_it_writes_them_all(
    cli: Cli, tmp_path: Path
) -> None:
    result = cli("audit", "google", "--rebuild-log", str(tmp_path / "log.md"))
    assert result.exit_code == 2 and "drop 'google'" in result.stderr
    assert not (tmp_path / "log.md").exists()


def test_redis_down_exits_1_naming_where(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    server = fakeredis.FakeServer()
    down = fakeredis.FakeRedis(server=server, decode_responses=True)
    server.connected = False
    monkeypatch.setattr(redis_connection, "connect", lambda url=None: down)
    result = cli("status", "google")
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error: Redis at redis://") and "check REDIS_URL" in result.stderr
    )


def test_durations_and_time_left_are_formatted_for_people() -> None:
    assert [format_duration(timedelta(seconds=s)) for s in (0, 45, 750, 3900)] == [
        "0s",
        "45s",
        "12m 30s",
        "1h 5m",
    ]
    assert remaining(None, timedelta(hours=1), AT) == timedelta(0)
    assert remaining(AT - timedelta(minutes=50), timedelta(hours=1), AT) == timedelta(minutes=10)


def test_the_status_table_shows_audience_pause_and_time_left() -> None:
    state = FlagState("google", 10, internal_only=True, paused=True, last_change_time=AT)
    row = status_row("google", state, timedelta(minutes=15), timedelta(hours=1), "defaults", AT)
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(status_table([row]))
    text = console.export_text()
    assert "internal" in text and "paused" in text and "15m" in text and "ready" in text


def test_a_conflict_message_tells_what_the_store_holds_now() -> None:
    message = set_message("google", "10", 50, ApplyResult(False, True, 0, True))
    assert "now 0%, paused=true" in message and "nothing written" in message


def test_status_warns_of_a_corrupt_history_key_without_failing(cli: Cli) -> None:
    cli("init", "google")
    cli.redis.set("flags:google:last_percent", "fifty")
    result = cli("status", "google", "--json")
    assert result.exit_code == 0
    assert "warning: flags:google:last_percent is 'fifty'" in result.stderr
    assert "promotions hold" in result.stderr
    (row,) = json.loads(result.stdout)
    assert row["problems"] and row["problems"][0].startswith("flags:google:last_percent")


def test_a_repaired_typo_shows_as_it_was_in_the_audit_and_the_log(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "ops-log.md"
    monkeypatch.setenv("ROLLOUT_AUDIT_LOG", str(log))
    cli("init", "google")
    cli.redis.set("flags:google:rollout_percent", "fifty")
    cli("set", "google", "10", "--reason", "repair")
    assert log.read_text(encoding="utf-8").splitlines()[-1].split("  ")[2] == "'fifty' -> 10%"
    (entry,) = json.loads(cli("audit", "google", "--json", "--limit", "1").stdout)
    assert (entry["old_percent"], entry["old_percent_raw"]) == (None, "fifty")
