"""The demo's scene checks, pure: no Prefect, no Redis."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rollout_core.config import parse_config
from rollout_core.model import SloSnapshot
from rollout_core.replay import ReplaySource
from rollout_demo.checks import SceneCheck, TickRecord, check_scene, exit_code, failed_scenes
from rollout_demo.environment import apply_demo_environment
from rollout_demo.scenario import (
    DEMO_CONFIG,
    FEATURE,
    SCENES,
    SPIKE,
    Expectation,
    Scene,
    Tick,
    at_minute,
    build_series,
)


def run(
    minute: float, percent: float, decision: str, guard: str | None = None, audited: bool = False
) -> TickRecord:
    """A controller run's row."""
    return TickRecord(at_minute(minute), percent, decision, "reason", guard, "Completed", audited)


SCENE = Scene(
    2, "ramp", "story", (Tick(5), Tick(10)), Expectation(10, "promote", guards_seen=("dwell",))
)


def test_a_scene_that_ends_as_expected_passes() -> None:
    records = [run(5, 10, "hold", guard="dwell"), run(10, 10, "promote")]
    check = check_scene(SCENE, records)
    assert check.ok
    assert check.got == check.expected == "10% promote Completed, held by dwell"


@pytest.mark.parametrize(
    ("records", "got"),
    [
        ([run(5, 10, "hold", guard="dwell"), run(10, 50, "promote")], "50% promote Completed"),
        ([run(5, 10, "promote")], "10% promote Completed"),  # the dwell never held
        ([run(5, 10, "hold", guard="dwell"), run(10, 10, "rollback")], "10% rollback"),
        ([], "no controller run"),
    ],
)
def test_a_scene_that_ends_otherwise_is_reported_and_fails_the_demo(
    records: list[TickRecord], got: str
) -> None:
    check = check_scene(SCENE, records)
    assert not check.ok
    assert check.got.startswith(got)
    passing = SceneCheck(1, "dry run", "x", "x", True)
    assert failed_scenes([passing, check]) == [check]
    assert exit_code([passing, check], expected_scenes=2) == 1


def test_the_run_state_and_the_audit_entry_are_part_of_the_check() -> None:
    outage = Scene(7, "outage", "", (Tick(170),), Expectation(100, "failed", state="Failed"))
    completed = TickRecord(at_minute(170), 100, "failed", "down", run_state="Completed")
    assert not check_scene(outage, [completed]).ok
    dry = Scene(1, "dry", "", (Tick(0),), Expectation(0, "recommend promote", audited=True))
    assert not check_scene(dry, [run(0, 0, "recommend promote", audited=False)]).ok
    assert check_scene(dry, [run(0, 0, "recommend promote", audited=True)]).ok


def test_a_failed_run_that_wrote_an_audit_entry_fails_the_check() -> None:
    wanted = Expectation(50, "failed", state="Failed", audited=False)
    outage = Scene(7, "outage", "", (Tick(170),), wanted)
    wrote = TickRecord(at_minute(170), 50, "failed", "down", run_state="Failed", audited=True)
    clean = TickRecord(at_minute(170), 50, "failed", "down", run_state="Failed")
    check = check_scene(outage, [wrote])
    assert not check.ok and check.got.endswith(", audited")
    assert check.expected.endswith(", nothing written")
    assert check_scene(outage, [clean]).ok


def test_operator_rows_are_not_runs() -> None:
    operator = TickRecord(at_minute(40), 0, "operator: pause", "why", audited=True)
    assert check_scene(SCENE, [operator]).got == "no controller run"


def test_exit_code_is_zero_only_when_every_scene_ran_and_passed() -> None:
    passing = [SceneCheck(n, "s", "x", "x", True) for n in range(1, 8)]
    assert exit_code(passing, expected_scenes=7) == 0
    assert exit_code(passing[:6], expected_scenes=7) == 1


def test_the_demo_config_and_series_drive_the_story() -> None:
    config = parse_config(DEMO_CONFIG, source="<demo>")
    spec = config.feature(FEATURE)
    assert (spec.ladder, spec.dwell, spec.cooldown) == (
        (0, 10, 50, 100),
        timedelta(minutes=15),
        timedelta(hours=1),
    )
    source = ReplaySource(build_series())
    calm = source.fetch([spec], at_minute(5))[FEATURE]
    spike = source.fetch([spec], at_minute(SPIKE[0] + 3))[FEATURE]
    assert isinstance(calm, SloSnapshot) and isinstance(spike, SloSnapshot)
    calm_ratio, spike_ratio = (s.reading("error_rate").value or 0.0 for s in (calm, spike))
    assert calm_ratio < 0.01 < spike_ratio
    assert [scene.number for scene in SCENES] == list(range(1, 9))


def test_the_regional_scene_breaks_eu_west_alone() -> None:
    from rollout_core.config import expand_segments
    from rollout_demo.scenario import REGION_SPIKE, REGIONAL_FEATURE

    units = expand_segments([parse_config(DEMO_CONFIG).feature(REGIONAL_FEATURE)])
    source = ReplaySource(build_series())
    during = source.fetch(units, at_minute(REGION_SPIKE[0] + 3))
    ratios = {
        name: s.reading("error_rate").value
        for name, s in during.items()
        if isinstance(s, SloSnapshot)
    }
    assert (ratios[f"{REGIONAL_FEATURE}[eu-west]"] or 0) > 0.05
    assert all((ratios[f"{REGIONAL_FEATURE}[{r}]"] or 1) < 0.01 for r in ("eu-canary", "us-east"))


def test_the_demo_environment_keeps_prefect_state_in_the_demo_directory(tmp_path: Path) -> None:
    environ = {"PREFECT_API_URL": "http://elsewhere:4200/api", "PREFECT_PROFILE": "prod"}
    values = apply_demo_environment(tmp_path / "demo", environ)
    assert "PREFECT_API_URL" not in environ and "PREFECT_PROFILE" not in environ
    assert environ["PREFECT_HOME"] == str((tmp_path / "demo" / "prefect").resolve())
    assert (tmp_path / "demo" / "prefect").is_dir()
    assert environ["ROLLOUT_AUDIT_LOG"].endswith("rollout_log.md")
    assert values == {k: environ[k] for k in values}
