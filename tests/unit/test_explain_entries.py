"""`rollout explain` on audit entries in a fake Redis: entries written by the controller's own
pass (run_pass, the abort path, dry runs) and entries it must refuse rather than misread."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from rollout_cli.main import app
from rollout_core import controller, redis_connection
from rollout_core.abort import Alert, abort_proposals
from rollout_core.config import parse_config
from rollout_core.controller import run_pass
from rollout_core.decision_inputs import describe_inputs
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.model import SloReading, SloSnapshot
from rollout_core.replay import ReplaySource

AT = datetime(2026, 1, 5, 10, tzinfo=UTC)
CONFIG = """
features:
  google:
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""
RULES = {"ladder": [0.0, 10.0, 50.0, 100.0], "safe_percent": 10.0, "dwell": 900.0,
         "cooldown": 3600.0, "freeze": 0}  # fmt: skip
GUARDS = [[name, False] for name in ("paused", "dwell", "cooldown", "freeze")]
HEALTHY_ROW = ["error_rate", "ratio", 0.002, 1000.0, 0.01, 200, "healthy"]


class Explain:
    """`rollout explain ID --config FILE [--json]` against one fake Redis."""

    def __init__(self, fake: fakeredis.FakeRedis, config: Path) -> None:
        self.redis, self.config = fake, config

    def __call__(self, entry_id: str, *extra: str) -> Result:
        args = ["explain", entry_id, "--config", str(self.config), *extra]
        return CliRunner().invoke(app, args)

    def json(self, entry_id: str) -> dict[str, object]:
        result = self(entry_id, "--json")
        assert result.exit_code == 0, result.output
        body: dict[str, object] = json.loads(result.stdout)
        return body

    def run_pass(self, config: str, dry_run: bool, readings: list[tuple[str, float]]) -> str:
        """One controller pass over these (SLO, value) readings at AT, n=1000: the audit id
        of the change (or recommendation) it made."""
        spec = parse_config(config).feature("google")
        store = RedisFlagStore(self.redis)
        store.init("google", AT - timedelta(days=1), "test")
        frame = pd.DataFrame(
            [(AT, "google", slo, value, 1000.0) for slo, value in readings],
            columns=["time", "feature", "slo", "value", "samples"],
        )
        outcomes = run_pass([spec], store, ReplaySource(frame), AT, dry_run)
        outcome = outcomes["google"]
        assert outcome.audit_id is not None, outcome.summary
        assert outcome.dry_run is dry_run and outcome.applied is not dry_run
        return outcome.audit_id

    def add(self, inputs: str | None = None, **fields: str) -> str:
        entry = {
            "time": "2026-01-05T10:00:00Z", "feature": "google", "old_percent": "0",
            "new_percent": "10", "reason": "Initial canary 0% -> 10%", "by": "controller",
            "dry_run": "false", "action": "promote", **fields,
        }  # fmt: skip
        if inputs is not None:
            entry["inputs"] = inputs
        return str(self.redis.xadd(AUDIT_STREAM, entry))  # type: ignore[arg-type]


@pytest.fixture
def explain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Explain:
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(redis_connection, "connect", lambda url=None: fake)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return Explain(fake, config)


def inputs(version: str = "0.1.0", percent: object = 0.0, row: list[object] | None = None) -> str:
    body = {
        "v": version, "h": "0123456789abcdef",
        "f": [percent, True, True, False, None, None, None],
        "s": [row or HEALTHY_ROW], "g": GUARDS, "c": RULES, "d": ["promote", "promote", 10.0],
    }  # fmt: skip
    return json.dumps(body, separators=(",", ":"))


def test_a_hand_written_entry_in_the_recorded_format_reproduces(explain: Explain) -> None:
    body = explain.json(explain.add(inputs()))

    assert body["reproduces"] is True, body["differences"]


def test_an_entry_from_a_newer_version_is_refused_rather_than_misread(explain: Explain) -> None:
    row = [*HEALTHY_ROW, "b:0.0008"]  # a column this version does not know

    result = explain(explain.add(inputs("99.0.0", row=row)), "--json")

    assert result.exit_code == 2, result.output
    assert "written by rollout-controller 99.0.0, newer than this" in result.stderr
    assert "explain this entry with 99.0.0 or later" in result.stderr
    assert result.stdout == ""  # no verdict at all, least of all "differs"


def test_an_entry_of_this_version_with_an_unknown_column_is_corrupt(explain: Explain) -> None:
    result = explain(explain.add(inputs(row=[*HEALTHY_ROW, "b:0.0008"])))

    assert result.exit_code == 2, result.output
    assert "s[0] is" in result.stderr and "expected a list of 7 or 9 items" in result.stderr


@pytest.mark.parametrize("percent", ["NaN", "Inf", -5, 150, "50", True])
def test_inputs_whose_percent_is_not_a_percent_are_a_corrupt_entry(
    explain: Explain, percent: object
) -> None:
    result = explain(explain.add(inputs(percent=percent)), "--json")

    assert result.exit_code == 2, result.output
    assert "f[0] (the flag's percent) is" in result.stderr
    assert "expected a percent in 0..100" in result.stderr and "a corrupt entry" in result.stderr
    assert "nan%" not in result.output.lower()


def test_inputs_with_an_unknown_verdict_name_the_slo(explain: Explain) -> None:
    row = [*HEALTHY_ROW[:6], "fine"]

    result = explain(explain.add(inputs(row=row)))

    assert result.exit_code == 2
    assert "s[0][6] (verdict of 'error_rate') is 'fine'" in result.stderr


TYPOS = ["garbage", "1767600000000", "1767600000000-x", "1-0-0", "99999999999999999999-0", ""]


@pytest.mark.parametrize("typo", TYPOS)
def test_a_malformed_audit_id_is_bad_input_naming_the_expected_form(
    explain: Explain, typo: str
) -> None:
    explain.add(inputs())

    result = explain(typo)

    assert result.exit_code == 2, result.output
    assert f"AUDIT_ID {typo!r} is not an audit entry id" in result.stderr
    assert "such as 1767600000000-0" in result.stderr
    assert "Redis" not in result.stderr and "server log" not in result.stderr


def test_an_id_of_no_entry_says_it_is_not_in_the_trail(explain: Explain) -> None:
    explain.add(inputs())

    result = explain("1-0")

    assert result.exit_code == 2
    assert "audit entry '1-0' is not in rollout:audit" in result.stderr


def test_a_controller_entry_from_before_inputs_existed_says_it_predates_them(
    explain: Explain,
) -> None:
    entry = explain.add(time="2025-10-08T15:00:00Z")

    result = explain(entry)

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: audit entry {entry} (promote by controller at 2025-10-08T15:00:00Z) predates "
        "recorded decision inputs: the controller that wrote it did not record them yet, so "
        "there is nothing to replay"
    )


def test_an_operator_entry_is_refused_as_not_a_controller_decision(explain: Explain) -> None:
    entry = explain.add(by="alice", action="set", reason="manual")

    result = explain(entry)

    assert result.exit_code == 2
    assert f"audit entry {entry} (set by alice) records no decision inputs" in result.stderr
    assert "it is not a controller decision" in result.stderr


def test_explain_says_a_dry_run_entry_was_a_recommendation_never_applied(
    explain: Explain,
) -> None:
    entry = explain.run_pass(CONFIG, dry_run=True, readings=[("error_rate", 0.002)])

    body = explain.json(entry)
    text = explain(entry)

    assert body["recorded"] == {**body["recorded"], "dry_run": True, "action": "promote"}
    assert body["reproduces"] is True, body["differences"]
    assert text.exit_code == 0, text.output
    assert "  recorded: recommend promote 0% -> 10% (dry run: not applied) (" in text.stdout
    assert "recorded: promote" not in text.stdout


def test_explain_shows_an_applied_change_as_the_change_it_was(explain: Explain) -> None:
    entry = explain.run_pass(CONFIG, dry_run=False, readings=[("error_rate", 0.002)])

    body = explain.json(entry)
    text = explain(entry)

    assert body["recorded"]["dry_run"] is False
    assert "  recorded: promote 0% -> 10% (Initial canary 0% -> 10%" in text.stdout
    assert "recommend" not in text.stdout and "dry run" not in text.stdout


ABORT_CONFIG = """
features:
  google:
    abort_on: [GmailErrorRateFast]
    slos:
      - name: error_rate
        ratio:
          errors: sum(increase(e_total[5m]))
          total: sum(increase(t_total[5m]))
        max: 0.01
        min_samples: 200
"""
ALERT = Alert(
    "GmailErrorRateFast", "google", "firing", "fp1", "2026-01-05T09:59:00Z",
    {"alertname": "GmailErrorRateFast", "rollout_feature": "google"}, "0.09",
)  # fmt: skip


def fast_abort(explain: Explain) -> str:
    """The abort run's steps at AT on a flag at 50%: the SLO window is still healthy, the fast
    alert fires; the audit id of the rollback it writes."""
    spec = parse_config(ABORT_CONFIG).feature("google")
    store = RedisFlagStore(explain.redis)
    store.init("google", AT - timedelta(days=1), "test")
    explain.redis.set("flags:google:rollout_percent", "50")
    readings = {"error_rate": SloReading("error_rate", 0.001, 1000.0)}
    states = controller.read_states(store, ["google"])
    proposals = controller.evaluate_all([spec], {"google": SloSnapshot("google", readings)}, states)
    proposals = abort_proposals([spec], proposals, states, ALERT)
    decisions = controller.check_all_guards([spec], states, proposals, AT)
    outcome = controller.apply_decisions(
        store, decisions, states, AT, False, episodes={"google": ALERT.episode}
    )["google"]
    assert outcome.applied and outcome.audit_id is not None
    assert outcome.decision is not None and outcome.decision.action == "rollback"
    return outcome.audit_id


def test_explain_reproduces_a_fast_abort_through_the_abort_evaluation(explain: Explain) -> None:
    explain.config.write_text(ABORT_CONFIG, encoding="utf-8")
    entry = fast_abort(explain)

    body = explain.json(entry)

    assert body["reproduces"] is True, body["differences"]
    assert body["differences"] == []
    assert body["recorded"]["verdicts"] == {"alert:GmailErrorRateFast": "breach",
                                            "error_rate": "healthy"}  # fmt: skip
    assert body["replayed"]["action"] == "rollback" and body["replayed"]["to_percent"] == 10.0
    assert body["replayed"]["reason"].startswith(
        "Rollback 50% -> 10% on alert:GmailErrorRateFast breach; alert:GmailErrorRateFast firing"
    )


def test_explain_of_a_fast_abort_names_an_alert_taken_out_of_abort_on(explain: Explain) -> None:
    explain.config.write_text(ABORT_CONFIG, encoding="utf-8")
    entry = fast_abort(explain)
    explain.config.write_text(ABORT_CONFIG.replace("[GmailErrorRateFast]", "[]"), "utf-8")

    body = explain.json(entry)

    assert body["reproduces"] is False
    assert body["replayed"]["action"] == "promote"  # the healthy SLO window alone
    assert (
        "alert 'GmailErrorRateFast' is no longer in google's abort_on (listed: none): today's "
        "abort run would ignore it"
    ) in body["differences"]
    assert not any("no longer configured" in line for line in body["differences"])


def test_a_fast_abort_recorded_before_alert_rows_had_a_kind_still_reproduces(
    explain: Explain,
) -> None:
    explain.config.write_text(ABORT_CONFIG, encoding="utf-8")
    rules = {**RULES, "dwell": 900.0}
    body = {
        "v": "0.1.0", "h": "0123456789abcdef",
        "f": [50.0, True, False, False, "2026-01-05T09:55:00.000000Z", 10.0, None],
        "s": [["alert:GmailErrorRateFast", "", 0.09, None, "NaN", 0, "breach"], HEALTHY_ROW],
        "g": GUARDS, "c": rules, "d": ["rollback", "rollback", 10.0],
    }  # fmt: skip
    entry = explain.add(json.dumps(body), old_percent="50", action="rollback")

    result = explain.json(entry)

    assert result["reproduces"] is True, result["differences"]


def test_audit_verbose_shows_an_abort_alert_as_a_firing_alert(explain: Explain) -> None:
    explain.config.write_text(ABORT_CONFIG, encoding="utf-8")
    entry = fast_abort(explain)
    [(_, fields)] = explain.redis.xrange(AUDIT_STREAM, entry, entry)

    shown = describe_inputs(fields["inputs"])

    assert shown.startswith("alert:GmailErrorRateFast firing (value 0.09): breach; error_rate")


COUNT_CONFIG = (
    CONFIG
    + """\
      - name: oauth_refresh_failures
        kind: count
        query: sum(increase(oauth_failures_total[15m]))
        max: 5
        absent_is_zero: ABSENT
"""
)


def test_an_absent_count_series_is_recorded_as_absent_not_as_the_zero_it_was_read_as(
    explain: Explain,
) -> None:
    config = COUNT_CONFIG.replace("ABSENT", "true")
    explain.config.write_text(config, encoding="utf-8")
    # the failure counter has no series (never exported yet): read as 0, a promotion
    entry = explain.run_pass(config, dry_run=False, readings=[("error_rate", 0.002)])
    [(_, fields)] = explain.redis.xrange(AUDIT_STREAM, entry, entry)
    [_, oauth] = json.loads(fields["inputs"])["s"]

    body = explain.json(entry)

    assert "(no series, read as 0)" in fields["reason"]
    assert oauth == ["oauth_refresh_failures", "count", None, None, 5.0, 0, "healthy"]
    shown = describe_inputs(fields["inputs"])  # rollout audit --verbose
    assert "oauth_refresh_failures absent (n=None, count, max 5.0, min_samples 0): healthy" in shown
    assert body["reproduces"] is True, body["differences"]


def test_explain_sees_that_an_absent_series_would_no_longer_read_as_zero(
    explain: Explain,
) -> None:
    then = COUNT_CONFIG.replace("ABSENT", "true")
    entry = explain.run_pass(then, dry_run=False, readings=[("error_rate", 0.002)])
    explain.config.write_text(COUNT_CONFIG.replace("ABSENT", "false"), encoding="utf-8")

    body = explain.json(entry)

    assert body["reproduces"] is False
    assert body["replayed"]["action"] == "hold"
    assert body["replayed"]["verdicts"]["oauth_refresh_failures"] == "inconclusive"
    assert (
        "SLO 'oauth_refresh_failures': its series was absent; read as 0 (absent_is_zero: true) "
        "then, no data (absent_is_zero: false) today"
    ) in body["differences"]


def test_an_older_entry_that_recorded_an_absent_count_as_zero_still_loads(
    explain: Explain,
) -> None:
    explain.config.write_text(COUNT_CONFIG.replace("ABSENT", "true"), encoding="utf-8")
    zero = ["oauth_refresh_failures", "count", 0.0, None, 5.0, 0, "healthy"]
    body = json.loads(inputs())
    body["s"].append(zero)

    result = explain.json(explain.add(json.dumps(body)))

    assert result["reproduces"] is True, result["differences"]
    assert result["recorded"]["verdicts"]["oauth_refresh_failures"] == "healthy"


def fine_ladder() -> str:
    """A 0.1% ladder: 1,001 steps."""
    return "[" + ", ".join(f"{step / 10:g}" for step in range(1001)) + "]"


def test_an_entry_stays_under_two_kilobytes_on_a_fine_ladder_with_three_slos(
    explain: Explain,
) -> None:
    config = COUNT_CONFIG.replace("ABSENT", "true").replace(
        "  google:\n", f"  google:\n    ladder: {fine_ladder()}\n"
    ) + (
        "      - name: latency_p95\n        query: histogram_quantile(0.95, x)\n        max: 0.5\n"
    )
    readings = [("error_rate", 0.002), ("oauth_refresh_failures", 0.0), ("latency_p95", 0.2)]
    entry = explain.run_pass(config, dry_run=False, readings=readings)
    [(_, fields)] = explain.redis.xrange(AUDIT_STREAM, entry, entry)
    rules = json.loads(fields["inputs"])["c"]

    assert len(fields["inputs"].encode()) < 2048
    assert len(json.loads(fields["inputs"])["s"]) == 3
    assert "ladder" not in rules and rules["ladder_steps"] == 1001
    assert rules["ladder_near"] == [None, 0.1]  # the flag was at 0%: no step below
    explain.config.write_text(config, encoding="utf-8")
    assert explain.json(entry)["reproduces"] is True


def test_explain_names_a_changed_ladder_from_its_hash_and_neighbouring_steps(
    explain: Explain,
) -> None:
    fine = CONFIG.replace("  google:\n", f"  google:\n    ladder: {fine_ladder()}\n")
    entry = explain.run_pass(fine, dry_run=False, readings=[("error_rate", 0.002)])

    body = explain.json(entry)  # today: the default ladder, 0 10 50 100

    assert body["reproduces"] is False and body["replayed"]["to_percent"] == 10.0
    [ladder] = [line for line in body["differences"] if line.startswith("ladder changed")]
    assert (
        ladder.startswith("ladder changed: 1001 steps (below 0%: none, above: 0.1%; hash ")
        and ") then, 4 steps (below 0%: none, above: 10%; hash " in ladder
    )


def test_an_older_entry_that_recorded_the_whole_ladder_still_names_a_changed_one(
    explain: Explain,
) -> None:
    rules = {**RULES, "ladder": [0.0, 5.0, 100.0]}
    body = json.loads(inputs())
    body["c"] = rules
    body["d"] = ["promote", "promote", 5.0]

    result = explain.json(explain.add(json.dumps(body), new_percent="5"))

    assert result["reproduces"] is False
    assert any(
        line.startswith("ladder changed: 3 steps (below 0%: none, above: 5%;")
        and "4 steps (below 0%: none, above: 10%;" in line
        for line in result["differences"]
    ), result["differences"]


def test_a_segments_fast_abort_reproduces_through_its_own_unit() -> None:
    from rollout_core.config import expand_segments
    from rollout_core.decision_inputs import DecisionInputs
    from rollout_core.explain import explain_inputs
    from rollout_core.model import Decision, FlagState

    spec = parse_config(
        """
features:
  google:
    abort_on: [GmailErrorRateFast]
    segments: {by: region, values: [eu, us]}
    slos:
      - {name: error_rate, ratio: {errors: sum by (region) (e), total: sum by (region) (t)},
         max: 0.01, min_samples: 200}
"""
    ).feature("google")
    units = expand_segments([spec])
    states = {unit.name: FlagState(unit.name, 50.0) for unit in units}
    snapshots = {
        unit.name: SloSnapshot(unit.name, {"error_rate": SloReading("error_rate", 0.001, 900.0)})
        for unit in units
    }
    alert = Alert(
        "GmailErrorRateFast", "google", "firing", "fp2", "2026-01-05T09:59:00Z",
        {"alertname": "GmailErrorRateFast", "rollout_feature": "google", "region": "eu"},
    )  # fmt: skip
    proposals = abort_proposals(
        units, controller.evaluate_all(units, snapshots, states), states, alert
    )
    decisions = controller.check_all_guards(units, states, proposals, AT, snapshots)
    eu, us = decisions["google[eu]"], decisions["google[us]"]
    assert isinstance(eu, Decision) and eu.action == "rollback"
    assert isinstance(us, Decision) and us.action != "rollback"  # the alert names eu only

    inputs = DecisionInputs.from_json("google[eu]", eu.inputs)
    explanation = explain_inputs(inputs, units[0], AT)

    assert explanation.reproduces, explanation.differences
    assert explanation.replayed["to_percent"] == 10.0
