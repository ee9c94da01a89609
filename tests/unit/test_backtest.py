"""The backtest engine (the flow's own pure pass over a replayed series), Prometheus range
reads against a fake client, and the offline `rollout backtest --series` command."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import fakeredis
import pandas as pd
import pytest
import requests
from typer.testing import CliRunner

from rollout_cli.main import app
from rollout_core.backtest import BacktestResult, backtest, ticks_between
from rollout_core.config import FeatureSpec, SloSpec
from rollout_core.controller import run_pass
from rollout_core.errors import ConfigError, MetricsUnavailable
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.history import RangeReader, chunks
from rollout_core.replay import ReplaySource
from rollout_core.slo import Answer

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
SPEC = FeatureSpec(
    name="google",
    slos=(
        SloSpec(name="error_rate", ratio={"errors": "e", "total": "t"}, max=0.01),
        SloSpec(name="oauth", kind="count", query="o", max=5),
    ),
)
CONFIG = """
features:
  google:
    slos:
      - {name: error_rate, ratio: {errors: e, total: t}, max: 0.01}
      - {name: oauth, kind: count, query: o, max: 5}
"""


def series(minutes: int, step: int, breach_from: int | None = None) -> pd.DataFrame:
    """Healthy readings every `step` minutes; a 20% error ratio from minute `breach_from`."""
    rows = []
    for minute in range(0, minutes + 1, step):
        ratio = 0.2 if breach_from is not None and minute >= breach_from else 0.001
        at = (T0 + timedelta(minutes=minute)).isoformat()
        rows += [(at, "google", "error_rate", ratio, 1000.0), (at, "google", "oauth", 0.0, None)]
    return pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])


def run(
    frame: pd.DataFrame,
    minutes: int,
    step: int,
    source: ReplaySource | None = None,
    from_percent: float = 0.0,
) -> BacktestResult:
    end = T0 + timedelta(minutes=minutes)
    replay = source or ReplaySource(frame)
    return backtest([SPEC], replay, T0, end, timedelta(minutes=step), from_percent)["google"]


def test_promotions_wait_out_the_dwell_on_the_simulated_clock() -> None:
    result = run(series(60, 5), 60, 5)

    promotions = [(c.time - T0, c.to_percent) for c in result.changes]
    assert promotions == [
        (timedelta(0), 10),
        (timedelta(minutes=15), 50),
        (timedelta(minutes=30), 100),
    ]
    assert result.summary.holds["dwell"] == 4
    assert result.summary.time_to_full == timedelta(minutes=30)


def test_a_breach_rolls_back_at_once_even_inside_the_dwell() -> None:
    result = run(series(30, 5, breach_from=20), 30, 5)

    first, then = result.changes[-2:]  # 15 minutes after the promotion to 50%: in the dwell
    assert (first.time - T0, first.action, first.from_percent, first.to_percent) == (
        timedelta(minutes=20),
        "rollback",
        50,
        10,
    )
    assert (then.time - T0, then.to_percent) == (timedelta(minutes=25), 0)
    assert "error_rate" in first.reason and "breach" in first.reason
    # 50% for the 20-minute tick and 10% for the 25-minute one, 5 minutes each
    assert result.summary.exposure == pytest.approx((50 + 10 + 0) * 5 / 60)


def test_a_metrics_outage_holds_and_counts_as_ticks_with_no_data() -> None:
    source = ReplaySource(series(30, 5))
    source.add_outage(T0 + timedelta(minutes=4), T0 + timedelta(minutes=26))

    result = run(series(30, 5), 30, 5, source=source)

    assert result.summary.no_data_ticks == 5
    assert result.summary.holds["metrics unavailable"] == 5
    assert [c.to_percent for c in result.changes] == [10, 50]


def test_the_from_percent_starts_the_simulated_flag_there() -> None:
    result = run(series(10, 5, breach_from=0), 10, 5, from_percent=50.0)

    assert [(c.from_percent, c.to_percent) for c in result.changes] == [(50, 10), (10, 0)]


def test_ticks_refuse_an_empty_or_backwards_range() -> None:
    with pytest.raises(ConfigError, match="must be after"):
        ticks_between(T0, T0, timedelta(minutes=10))
    with pytest.raises(ConfigError, match="must be positive"):
        ticks_between(T0, T0 + timedelta(hours=1), timedelta(0))


def test_thirty_days_at_ten_minutes_fit_one_range_request_per_query() -> None:
    assert len(chunks(T0, T0 + timedelta(days=30), timedelta(minutes=10))) == 1
    pieces = chunks(T0, T0 + timedelta(days=8), timedelta(minutes=1))
    assert len(pieces) == 2
    assert all((b - a) / timedelta(minutes=1) + 1 <= 11_000 for a, b in pieces)
    assert pieces[1][0] - pieces[0][1] == timedelta(minutes=1)  # no tick read twice or lost


class FakeRange:
    """Answers query_range with one matrix per query; records what was asked."""

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, Mapping[str, str]]] = []

    def query_range(self, promql: str, params: Mapping[str, str]) -> Answer:
        self.asked.append((promql, params))
        answer = self.answers[promql]
        if isinstance(answer, Exception):
            raise answer
        return answer


def matrix(values: list[tuple[datetime, float]]) -> Answer:
    points = [[at.timestamp(), f"{value}"] for at, value in values]
    result = [{"metric": {}, "values": points}]
    return Answer(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})


def test_range_reads_pick_each_tick_with_the_live_sources_rules() -> None:
    times = [T0, T0 + timedelta(minutes=10)]
    client = FakeRange(
        {
            "e": matrix([(times[0], 1), (times[1], 40)]),
            "t": matrix([(times[0], 1000), (times[1], 0)]),
            "o": matrix([(times[1], 2)]),
        }
    )
    reader = RangeReader("http://prometheus.invalid", client=client)

    frame = reader.read([SPEC], T0, times[1], timedelta(minutes=10))

    assert reader.requests_sent == 3
    rows = {(r.time, r.slo): (r.value, r.samples) for r in frame.itertuples()}
    assert rows[(times[0], "error_rate")] == (0.001, 1000)
    assert pd.isna(rows[(times[1], "error_rate")][0])  # no traffic: no ratio, n = 0
    assert rows[(times[1], "error_rate")][1] == 0
    assert pd.isna(rows[(times[0], "oauth")][0])  # no series: a row the replay reads as absent
    errors = {(r.time, r.slo): r.error for r in frame.itertuples()}
    assert errors[(times[0], "oauth")] == "no series" and errors[(times[1], "oauth")] == ""
    assert client.asked[0][1]["step"] == "600"


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (
            Answer(400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
            ConfigError,
            "refused query 'e'",
        ),
        (
            Answer(
                422,
                {
                    "status": "error",
                    "errorType": "execution",
                    "error": "query processing would load too many samples into memory",
                },
            ),
            ConfigError,
            r"too many samples into memory\); narrow the range or raise --step",
        ),
        (
            Answer(503, {"status": "error", "errorType": "timeout", "error": "slow"}),
            MetricsUnavailable,
            "HTTP 503",
        ),
        (requests.ConnectionError("refused"), MetricsUnavailable, "did not answer"),
    ],
)
def test_range_read_errors_name_prometheus_error_and_the_fix(
    answer: Answer | Exception, error: type[Exception], words: str
) -> None:
    client = FakeRange({"e": answer})  # type: ignore[dict-item]
    reader = RangeReader("http://prometheus.invalid", client=client)

    with pytest.raises(error, match=words):
        reader.read([SPEC], T0, T0 + timedelta(hours=1), timedelta(minutes=10))


def test_backtest_json_offline_on_a_recorded_series(tmp_path: Path) -> None:
    recorded = tmp_path / "series.csv"
    series(60, 5, breach_from=45).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--series", str(recorded), "--config", str(config), "--json"],
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    actions = [c["action"] for c in body["changes"]]
    assert actions == ["promote", "promote", "promote", "rollback", "rollback"]
    assert set(body["changes"][0]) == {"time", "action", "from_percent", "to_percent", "reason"}
    assert body["summary"]["promotions"] == 3 and body["summary"]["rollbacks"] == 2
    assert body["range_requests"] == 0


def test_backtest_refuses_a_time_it_cannot_read_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    result = CliRunner().invoke(
        app, ["backtest", "google", "--start", "yesterday", "--config", str(config)]
    )

    assert result.exit_code == 2
    assert "time 'yesterday' is invalid" in result.output


def test_features_replayed_in_several_processes_decide_as_in_one() -> None:
    frame = pd.concat(
        [series(60, 5, breach_from=40)]
        + [series(60, 5).assign(feature=name) for name in ("mail", "chat", "docs")]
    )
    specs = [SPEC, *(SPEC.model_copy(update={"name": n}) for n in ("mail", "chat", "docs"))]
    end, step = T0 + timedelta(minutes=60), timedelta(minutes=5)

    alone = backtest(specs, ReplaySource(frame), T0, end, step)
    forked = backtest(specs, ReplaySource(frame), T0, end, step, workers=2, keep_ticks=False)

    assert list(forked) == ["google", "mail", "chat", "docs"]
    for name in alone:
        assert forked[name].changes == alone[name].changes
        assert forked[name].summary == alone[name].summary
        assert forked[name].ticks == ()
    assert alone["google"].summary.rollbacks == 2 and alone["mail"].summary.rollbacks == 0


SEGMENTED = """
features:
  google:
    dwell: 5m
    segments: {by: region, values: [canary, west], order: sequential}
    slos:
      - name: error_rate
        ratio:
          errors: sum by (region) (e)
          total: sum by (region) (t)
        max: 0.01
"""


def segment_rows(segment: str, minutes: int, breach_from: int | None = None) -> pd.DataFrame:
    frame = series(minutes, 5, breach_from)
    frame = frame[frame["slo"] == "error_rate"]
    return frame.assign(feature=f"google[{segment}]")


def test_a_segmented_feature_replays_every_segment_in_order_and_rolls_back_one_alone(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "segments.csv"
    pd.concat([segment_rows("canary", 120), segment_rows("west", 120, breach_from=100)]).to_csv(
        recorded, index=False
    )
    config = tmp_path / "rollouts.yaml"
    config.write_text(SEGMENTED, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config), "--json"]
    )

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body["segments"]) == {"canary", "west"}
    canary_full = max(
        c["time"] for c in body["changes"] if c["segment"] == "canary" and c["to_percent"] == 100
    )
    west = [c for c in body["changes"] if c["segment"] == "west"]
    assert west and min(c["time"] for c in west) > canary_full  # sequential: canary first
    assert [c["action"] for c in west][-1] == "rollback"
    assert body["segments"]["canary"]["summary"]["rollbacks"] == 0
    assert body["summary"]["rollbacks"] == body["segments"]["west"]["summary"]["rollbacks"]
    assert body["segments"]["west"]["summary"]["holds_by_cause"]["segment order"] > 0


def test_a_segmented_feature_backtested_from_full_rollout_is_full_from_the_start(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "segments.csv"
    pd.concat([segment_rows("canary", 60), segment_rows("west", 60)]).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(SEGMENTED, encoding="utf-8")

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--series", str(recorded), "--config", str(config),
         "--from-percent", "100", "--json"],
    )  # fmt: skip

    assert result.exit_code == 0, repr(result.exception)
    body = json.loads(result.stdout)
    assert body["summary"]["time_to_full"] == 0
    assert body["segments"]["west"]["summary"]["time_to_full"] == 0


def test_a_fleet_replays_in_groups_each_feature_as_it_would_alone_segments_in_one_pass() -> None:
    from rollout_core.config import expand_segments, parse_config

    plain = [f"f{n:02d}" for n in range(40)]
    segmented = expand_segments([parse_config(SEGMENTED).feature("google")])
    specs = [SPEC.model_copy(update={"name": name}) for name in plain[:31]]
    specs += [*segmented, *(SPEC.model_copy(update={"name": name}) for name in plain[31:])]
    frame = pd.concat(
        [
            segment_rows("canary", 120),
            segment_rows("west", 120, breach_from=100),
            *(
                series(120, 5, 20 + 5 * n if n % 3 else None).assign(feature=plain[n])
                for n in range(40)
            ),
        ]
    )
    end, step = T0 + timedelta(minutes=120), timedelta(minutes=5)

    fleet = backtest(specs, ReplaySource(frame), T0, end, step)
    forked = backtest(specs, ReplaySource(frame), T0, end, step, workers=2, keep_ticks=False)
    alone = backtest(segmented, ReplaySource(frame), T0, end, step)
    for spec in specs:
        if spec.parent is None:
            alone.update(backtest([spec], ReplaySource(frame), T0, end, step))

    assert list(fleet) == list(forked) == [spec.name for spec in specs]
    for name, result in alone.items():
        assert fleet[name].changes == forked[name].changes == result.changes
        assert fleet[name].summary == forked[name].summary == result.summary
        assert fleet[name].ticks == result.ticks
    assert fleet["google[west]"].summary.holds["segment order"] > 0
    assert fleet["f01"].summary.rollbacks > 0 and fleet["f00"].summary.rollbacks == 0


def test_range_reads_give_each_segment_its_own_series() -> None:
    from rollout_core.config import expand_segments, parse_config

    units = expand_segments([parse_config(SEGMENTED).feature("google")])
    by_region = [
        {"metric": {"region": region}, "values": [[T0.timestamp(), value]]}
        for region, value in (("canary", "2"), ("west", "30"))
    ]
    total = [
        {"metric": {"region": region}, "values": [[T0.timestamp(), "1000"]]}
        for region in ("canary", "west")
    ]

    def answer(result: list[dict[str, object]]) -> Answer:
        return Answer(
            200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    client = FakeRange(
        {"sum by (region) (e)": answer(by_region), "sum by (region) (t)": answer(total)}
    )
    frame = RangeReader("http://prometheus.invalid", client=client).read(
        units, T0, T0 + timedelta(minutes=10), timedelta(minutes=10)
    )  # the second tick has no series: a `no series` row each

    first = frame[frame["time"] == T0]
    assert dict(zip(first["feature"], first["value"], strict=True)) == {
        "google[canary]": 0.002,
        "google[west]": 0.03,
    }
    second = frame[frame["time"] == T0 + timedelta(minutes=10)]
    assert list(second["error"]) == ["no series", "no series"]


def test_backtest_prints_the_changes_with_their_evidence_and_the_summary(tmp_path: Path) -> None:
    recorded = tmp_path / "series.csv"
    series(60, 5, breach_from=45).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config)]
    )

    assert result.exit_code == 0, result.output
    assert "simulated changes" in result.output and "50% -> 100%" in result.output
    assert "20.0% (n=1000, 99% lower bound" in result.output  # the breach's evidence
    for row in ("promotions", "rollbacks", "holds", "ticks with no data", "time to 100%"):
        assert row in result.output
    assert "exposure to breached SLOs" in result.output


FLOW_SPEC = FeatureSpec.model_validate(
    {
        "name": "google",
        "dwell": "15m",
        "cooldown": "1h",
        "freeze": [{"days": ["tue"], "start": "09:00", "end": "13:00", "tz": "Europe/Berlin"}],
        "slos": [
            {"name": "error_rate", "ratio": {"errors": "e", "total": "t"}, "max": 0.01},
            {"name": "latency_p95", "query": "l", "max": 0.5},
            {"name": "oauth_refresh_failures", "kind": "count", "query": "o", "max": 5},
        ],
    }
)


def eventful(days: int, seed: int = 14) -> pd.DataFrame:
    """A noisy history with every kind of tick: breaches, thin windows (n < 200), NaN
    latencies, absent counts (read as 0), slow latencies and bursts of OAuth failures."""
    rng = random.Random(seed)
    rows = []
    for tick in range(days * 144 + 1):
        at = (T0 + timedelta(minutes=10 * tick)).isoformat()
        n = rng.choice([40.0, 150.0, 900.0, 1200.0, 5000.0])
        ratio = rng.choice([0.0, 0.002, 0.004, 0.012]) if rng.random() > 0.04 else 0.08
        latency = rng.choice([0.12, 0.3, float("nan"), 0.7]) if rng.random() > 0.7 else 0.2
        rows += [
            (at, "google", "error_rate", ratio, n),
            (at, "google", "latency_p95", latency, None),
        ]
        if rng.random() > 0.2:
            oauth = float(rng.choice([0, 1, 2, 9])) if rng.random() > 0.8 else 0.0
            rows.append((at, "google", "oauth_refresh_failures", oauth, None))
    return pd.DataFrame(rows, columns=["time", "feature", "slo", "value", "samples"])


def test_the_backtest_decides_and_words_every_tick_as_the_flows_own_pass_does() -> None:
    # the flow's pass (run_pass: fetch, evaluate, guards, compare-and-set) tick by tick on the
    # real flag store over fakeredis, next to the backtest's simulated flag state
    source = ReplaySource(eventful(days=3))
    source.add_outage(T0 + timedelta(hours=20), T0 + timedelta(hours=21))
    end = T0 + timedelta(days=3)
    result = backtest([FLOW_SPEC], source, T0, end, timedelta(minutes=10))["google"]
    client = fakeredis.FakeRedis(decode_responses=True)
    keys = {"enabled": "true", "rollout_percent": "0", "paused": "false"}
    client.mset({f"flags:google:{name}": value for name, value in keys.items()})
    store = RedisFlagStore(client)

    flow: list[tuple[object, ...]] = []
    for at in ticks_between(T0, end, timedelta(minutes=10)):
        outcome = run_pass([FLOW_SPEC], store, source, at, dry_run=False)["google"]
        decision = outcome.decision
        if decision is None:
            flow.append((at, "failed", outcome.error))
        else:
            action = str(decision.action) if decision.is_change else "hold"
            flow.append((at, action, decision.to_percent, decision.reason))
    entries = cast(list[tuple[str, dict[str, str]]], client.xrange(AUDIT_STREAM))
    audited = [fields["reason"] for _, fields in entries]

    replayed = [
        (t.at, t.action, t.reason)
        if t.action == "failed"
        else (t.at, t.action, t.percent, t.reason)
        for t in result.ticks
    ]
    assert replayed == flow
    assert [c.reason for c in result.changes] == audited
    assert {t.action for t in result.ticks} == {"promote", "rollback", "hold", "failed"}
    assert result.summary.holds == {
        "inconclusive": 207,
        "cooldown": 55,
        "dwell": 31,
        "full rollout": 27,
        "breach at 0%": 15,
        "metrics unavailable": 6,
        "freeze": 5,
    }
    # word for word, a sample of each kind of tick (the first of each), as the flow writes them
    assert {i: result.ticks[i].reason for i in WORDING} == WORDING


HEALTHY_3 = "latency_p95 0.2s <= max 0.5s: healthy; oauth_refresh_failures 0 <= max 5: healthy"
WORDING = {
    0: "Hold at 0%: inconclusive error_rate; error_rate 0.2% (n=40 < min_samples 200): "
    "inconclusive",
    2: "Initial canary 0% -> 10%: all SLOs healthy; error_rate 0.4% (n=900, 99% lower bound "
    f"0.1%) <= max 1.0%: healthy; {HEALTHY_3}",
    4: "Rollback 10% -> 0% on error rate breach; error_rate 8.0% (n=900, 99% lower bound 6.1%) "
    "> max 1.0%: breach",
    7: "Hold at 0%: cooldown: 30m of 1h since last rollback at 00:40Z; promotion waits 30m; "
    "proposed: Initial canary 0% -> 10%: all SLOs healthy; error_rate 0.2% (n=1200, 99% lower "
    f"bound 0.05%) <= max 1.0%: healthy; {HEALTHY_3}",
    9: "Hold at 0%: error rate breach, nothing to roll back; error_rate 8.0% (n=40, 99% lower "
    "bound 2.4%) > max 1.0%: breach",
    11: "Hold at 10%: dwell: 10m of 15m since last change at 01:40Z; promotion waits 5m; "
    "proposed: SLOs healthy, ramp 10% -> 50%; error_rate 0.0% (n=1200, 99% lower bound 0.0%) "
    f"<= max 1.0%: healthy; {HEALTHY_3}",
    95: "Hold at 100%: full rollout reached; error_rate 0.0% (n=900, 99% lower bound 0.0%) <= "
    f"max 1.0%: healthy; {HEALTHY_3}",
    120: "replayed metrics outage from 2026-01-05T20:00:00+00:00 to 2026-01-05T21:00:00+00:00 "
    "(<replay frame>); the controller must hold and retry",
    198: "Hold at 0%: freeze: tue 10:00 Europe/Berlin is inside the freeze window tue "
    "09:00-13:00 Europe/Berlin; no promotions until it ends; proposed: Initial canary 0% -> "
    "10%: all SLOs healthy; error_rate 0.4% (n=900, 99% lower bound 0.1%) <= max 1.0%: "
    f"healthy; {HEALTHY_3}",
}


def test_a_range_of_too_many_ticks_is_refused_before_any_range_request() -> None:
    client = FakeRange({})
    reader = RangeReader("http://prometheus.invalid", client=client)

    with pytest.raises(ConfigError, match=r"2,592,001 ticks; a backtest replays at most 20,000"):
        reader.read([SPEC], T0, T0 + timedelta(days=30), timedelta(seconds=1))
    assert client.asked == []


def test_backtest_refuses_a_one_second_step_over_a_month_naming_the_step_that_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_BASE_URL", "http://127.0.0.1:9")  # never reached
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--start", "2026-01-01T00:00:00Z", "--end",
         "2026-01-31T00:00:00Z", "--step", "1s", "--config", str(config)],
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "every --step 1s is 2,592,001 ticks" in result.stderr
    assert "use --step 2m10s or more, or a shorter range" in result.stderr


def test_backtest_refuses_a_range_in_the_future_saying_there_is_nothing_to_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_BASE_URL", "http://127.0.0.1:9")  # never reached
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--start", future.isoformat(), "--end",
         (future + timedelta(days=1)).isoformat(), "--config", str(config)],
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "is in the future" in result.stderr and "nothing there to replay" in result.stderr


def test_a_from_percent_finer_than_the_gate_serves_is_quoted_as_typed(tmp_path: Path) -> None:
    recorded = tmp_path / "series.csv"
    series(60, 5).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--series", str(recorded), "--config", str(config),
         "--from-percent", "0.00001"],
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "percent '0.00001' has more than 2 decimals" in result.stderr
    assert "1e-05" not in result.stderr


def several_series(values: list[tuple[datetime, float]]) -> Answer:
    """One series per pod: the live source refuses such a result (no sum)."""
    result = [
        {"metric": {"instance": pod}, "values": [[at.timestamp(), f"{v}"] for at, v in values]}
        for pod in ("pod-a", "pod-b")
    ]
    return Answer(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})


def test_a_query_error_in_a_range_read_stays_an_error_in_the_replay_never_zero_failures() -> None:
    from rollout_core.history import query_errors

    times = [T0 + timedelta(minutes=10 * i) for i in range(13)]
    client = FakeRange(
        {
            "e": matrix([(at, 1) for at in times]),
            "t": matrix([(at, 1000) for at in times]),
            "o": several_series([(at, 20) for at in times]),
        }
    )
    frame = RangeReader("http://prometheus.invalid", client=client).read(
        [SPEC], T0, times[-1], timedelta(minutes=10)
    )

    source = ReplaySource(frame, staleness=timedelta(0))
    snapshot = source.fetch([SPEC], times[3])["google"]
    oauth = snapshot.reading("oauth")  # type: ignore[union-attr]
    assert oauth.error is not None and oauth.error.kind == "several_series"
    assert oauth.error.query == "o" and "wrap it in sum(...)" in oauth.error.detail
    result = backtest([SPEC], source, T0, times[-1], timedelta(minutes=10))["google"]
    assert result.changes == ()  # live holds on it; it never promotes on "0 failures"
    assert result.summary.no_data_ticks == 13
    assert "SLO 'oauth' of 'google' could not be read at 13 of 13 ticks" in str(query_errors(frame))
    assert "several_series" in str(query_errors(frame))


def test_a_tick_where_prometheus_answered_nothing_is_no_data_not_the_tick_before() -> None:
    """The service and its exporter die right after an incident's first reading: live reads
    no data at the next tick and holds; the replay must not act on the reading before."""
    ladder = SPEC.model_copy(update={"ladder": (0.0, 10.0, 50.0, 100.0), "safe_percent": 10.0})
    times = [T0 + timedelta(minutes=10 * i) for i in range(4)]
    client = FakeRange(
        {
            "e": matrix([(times[0], 200)]),  # 20%: a breach, then nothing
            "t": matrix([(times[0], 1000)]),
            "o": matrix([(times[0], 0)]),
        }
    )
    frame = RangeReader("http://prometheus.invalid", client=client).read(
        [ladder], T0, times[-1], timedelta(minutes=10)
    )

    # even a staleness of a whole step reads each tick as Prometheus answered it
    source = ReplaySource(frame, staleness=timedelta(minutes=10))
    result = backtest([ladder], source, T0, times[-1], timedelta(minutes=10), 100.0)["google"]

    assert [(c.time, c.from_percent, c.to_percent) for c in result.changes] == [(T0, 100.0, 10.0)]
    assert result.summary.no_data_ticks == 3


def test_backtest_refuses_a_series_that_does_not_hold_the_feature(tmp_path: Path) -> None:
    recorded = tmp_path / "series.csv"
    series(60, 5).assign(feature="google[eu-west]").to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert f"{recorded} holds no rows for google; it holds google[eu-west]" in result.stderr


def test_backtest_refuses_a_series_without_a_count_slo_rather_than_read_zero_failures(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "series.csv"
    frame = series(60, 5)
    frame[frame["slo"] == "error_rate"].to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert "no rows for SLO google/oauth (a count SLO would read as 0 failures)" in result.stderr


def test_backtest_refuses_conflicting_duplicate_readings_naming_the_file_and_rows(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "merged.csv"
    healthy = series(60, 5)
    pd.concat([healthy, healthy.assign(value=0.2)]).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert f"{recorded}: rows 1 and 27 are duplicate readings of google/error_rate" in (
        result.stderr
    )


def test_a_series_content_error_names_the_file(tmp_path: Path) -> None:
    recorded = tmp_path / "history-2026-01.csv"
    series(60, 5).rename(columns={"value": "val"}).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")

    result = CliRunner().invoke(
        app, ["backtest", "google", "--series", str(recorded), "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert f"{recorded}: missing column(s) value" in result.stderr


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("timelines", "is a directory; name the file to write, e.g. {tmp}/timelines/timeline.png"),
        ("a-file/timeline.png", "--png {tmp}/a-file/timeline.png: {tmp}/a-file is a file, not a"),
        ("timeline.svg", "expected a file name ending in .png"),
    ],
)
def test_a_png_path_that_cannot_be_the_timeline_is_refused_before_anything_is_written(
    tmp_path: Path, target: str, words: str
) -> None:
    (tmp_path / "timelines").mkdir()
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    recorded = tmp_path / "series.csv"
    series(60, 5).to_csv(recorded, index=False)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    before = sorted(tmp_path.iterdir())

    result = CliRunner().invoke(
        app,
        ["backtest", "google", "--series", str(recorded), "--config", str(config),
         "--png", str(tmp_path / target), "--export", str(tmp_path / "export.csv")],
    )  # fmt: skip

    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 2, result.output
    assert words.format(tmp=tmp_path) in result.stderr
    assert sorted(tmp_path.iterdir()) == before  # no export, no DIR.png beside the directory
