"""`rollout backtest` and `rollout tune` against a real Prometheus backfilled (promtool) with a
generated history: a quiet week whose error ratio wanders between 0.2% and 0.8%, then an
incident at 8% for two hours (tests/history_data.py). The rollouts file's error-ratio max
(0.2%) is too tight for that noise on purpose."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from deployments.servers import RunningServer, start_prometheus
from rollout_cli.main import app
from rollout_core.history import RangeReader
from tests.history_data import CONFIG, History, backfill, default_history

pytestmark = pytest.mark.integration

HISTORY = default_history()


@pytest.fixture(scope="module")
def history_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("history-prometheus")
    backfill(HISTORY, data_dir)
    server = start_prometheus(data_dir, extra_args=["--storage.tsdb.retention.time=3650d"])
    yield server
    server.stop()


@pytest.fixture
def env(history_prometheus: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PROMETHEUS_BASE_URL", history_prometheus.url)
    config = tmp_path / "rollouts.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def rollout(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def backtest(config: Path, history: History = HISTORY, *extra: str) -> dict[str, Any]:
    result = rollout(
        "backtest", "google", "--start", iso(history.start), "--end", iso(history.end),
        "--step", "10m", "--config", str(config), "--json", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def when(change: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(change["time"].replace("Z", "+00:00"))


def in_incident(change: dict[str, Any]) -> bool:
    return HISTORY.incident_start <= when(change) <= HISTORY.incident_end


def quiet(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in changes if when(c) < HISTORY.quiet_end]


def test_backtest_reads_the_month_in_a_few_range_requests_and_rolls_back_at_the_incident(
    env: Path,
) -> None:
    body = backtest(env)

    assert body["range_requests"] <= 6  # one per distinct query: the range fits one chunk
    changes = body["changes"]
    rollbacks = [c for c in changes if c["action"] == "rollback"]
    assert any(in_incident(c) for c in rollbacks)
    assert set(body["summary"]) >= {"promotions", "rollbacks", "holds", "no_data_ticks"}
    assert body["summary"]["time_to_full"] is not None
    # the tight max mistakes the quiet week's noise for breaches
    assert [c for c in quiet(changes) if c["action"] == "rollback"]


def test_tune_keeps_the_quiet_week_free_of_rollbacks_and_still_catches_the_incident(
    env: Path, tmp_path: Path
) -> None:
    result = rollout(
        "tune", "google", "--start", iso(HISTORY.start), "--end", iso(HISTORY.end),
        "--config", str(env), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)
    by_name = {slo["name"]: slo for slo in tuned["slos"]}
    assert set(by_name) == {"error_rate", "latency_p95", "oauth_refresh_failures"}
    for slo in tuned["slos"]:
        assert slo["expected_false_rollback"] <= 0.005
        assert slo["detects"].startswith("detects")
    assert 0.002 < by_name["error_rate"]["max"] < 0.08  # above the noise, below the incident

    suggested = tmp_path / "suggested.yaml"
    suggested.write_text(tuned["config"], encoding="utf-8")
    body = backtest(suggested)

    changes = body["changes"]
    assert [c for c in quiet(changes) if c["action"] == "promote"]  # it goes live
    assert not [c for c in quiet(changes) if c["action"] == "rollback"]
    assert [c for c in changes if c["action"] == "rollback" and in_incident(c)]
    assert tuned["backtest"]["suggested"]["rollbacks"] < tuned["backtest"]["current"]["rollbacks"]


def test_tune_refuses_too_little_history_and_says_how_much_more_it_needs(env: Path) -> None:
    end = HISTORY.start + timedelta(days=1)
    result = rollout(
        "tune", "google", "--start", iso(HISTORY.start), "--end", iso(end), "--config", str(env)
    )

    assert result.exit_code == 2
    assert "needs at least 600" in result.output and "widen the range by about" in result.output


def test_export_then_series_replays_exactly_the_same_backtest(env: Path, tmp_path: Path) -> None:
    exported = tmp_path / "history.parquet"
    online = backtest(env, HISTORY, "--export", str(exported), "--png", str(tmp_path / "t.png"))

    offline = rollout(
        "backtest", "google", "--series", str(exported), "--step", "10m", "--config", str(env),
        "--json",
    )  # fmt: skip
    assert offline.exit_code == 0, offline.output
    replayed = json.loads(offline.stdout)
    assert online["summary"]["no_data_ticks"] >= 1  # the first tick: one sample, no increase()
    assert (replayed["start"], replayed["end"]) == (online["start"], online["end"])
    assert replayed["summary"] == online["summary"]
    assert replayed["changes"] == online["changes"]
    assert (tmp_path / "t.png").stat().st_size > 10_000
    frame = pd.read_parquet(exported)
    assert list(frame.columns) == ["time", "feature", "slo", "value", "samples", "error"]
    assert len(frame) == 3 * online["summary"]["ticks"]  # every SLO at every tick
    assert set(frame["error"]) == {"", "no series"}


def test_a_count_query_the_live_flow_cannot_read_is_refused_naming_it_never_read_as_zero(
    env: Path,
) -> None:
    """Without sum(), the histogram's buckets are one series each: live, the SLO has no
    reading and the run fails as a configuration error; the backtest must not read 0."""
    broken = env.read_text(encoding="utf-8").replace(
        'sum(increase(oauth_events_total{provider="google",event="refresh_failed"}[15m]))',
        'increase(action_latency_seconds_bucket{provider="google"}[15m])',
    )
    env.write_text(broken, encoding="utf-8")
    end = HISTORY.start + timedelta(hours=6)

    result = rollout(
        "backtest", "google", "--start", iso(HISTORY.start), "--end", iso(end),
        "--config", str(env), "--json",
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "SLO 'oauth_refresh_failures' of 'google' could not be read at" in result.stderr
    assert "several_series" in result.stderr and "action_latency_seconds_bucket" in result.stderr


def test_a_query_prometheus_refuses_is_a_configuration_error_naming_it(
    history_prometheus: RunningServer,
) -> None:
    from rollout_core.config import parse_config
    from rollout_core.errors import ConfigError

    spec = parse_config(CONFIG.replace("sum(increase(oauth", "sum(increase(oauth{")).feature(
        "google"
    )
    reader = RangeReader(history_prometheus.url)
    with pytest.raises(ConfigError, match=r"refused query .*bad_data"):
        reader.read([spec], HISTORY.start, HISTORY.end, timedelta(minutes=10))


def test_a_range_longer_than_prometheus_allows_is_read_in_chunks(
    history_prometheus: RunningServer,
) -> None:
    from rollout_core.config import parse_config

    spec = parse_config(CONFIG).feature("google")
    reader = RangeReader(history_prometheus.url)
    # 9 days at one minute is 12,961 points per series: Prometheus refuses that in one read
    frame = reader.read([spec], HISTORY.start, HISTORY.end, timedelta(minutes=1))

    assert reader.requests_sent == 2 * 4  # two chunks of the four distinct queries
    errors = frame[frame["slo"] == "error_rate"]
    assert len(errors) > 12_000
