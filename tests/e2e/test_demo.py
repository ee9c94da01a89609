"""`rollout demo` as a user runs it: a subprocess with its own output directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROLLOUT = str(Path(sys.executable).with_name("rollout"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_demo_plays_every_scene_as_expected_and_leaves_its_log_and_timeline(
    tmp_path: Path,
) -> None:
    output_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ROLLOUT_"))}
    started = time.monotonic()
    finished = subprocess.run(
        [ROLLOUT, "demo", "--output-dir", str(output_dir)],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=240,
        check=False,
    )
    wall = time.monotonic() - started
    print(f"rollout demo: {wall:.1f} s wall time (fresh Prefect database)")
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output

    summary = output[output.index("Demo summary") :]
    for number in range(1, 9):
        assert f"{number}. " in summary, summary
    # a passing row ends "│ as expected │"; a failing one "│ NOT as expected │"
    assert summary.count("│ as expected │") == 8, summary
    assert "NOT as expected" not in output
    assert "Controller flow runs: 18 (ok 17, prom_unreachable 1)" in output

    png = output_dir / "timeline.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert str(png.resolve()) in output

    audit = output_dir / "rollout_log.md"
    assert str(audit.resolve()) in output
    log = audit.read_text()
    assert "recommend 0% -> 10%" in log and "dry_run=true" in log
    for change in ("0% -> 10%", "10% -> 50%", "50% -> 100%", "50% -> 10%"):
        assert f"google  {change}  reason=" in log, change
    for action in ("audience", "pause", "resume"):
        assert f"action={action}" in log, action
    # the outage's Failed run, due a promotion, wrote nothing after the operator's resume
    google_lines = [line for line in log.splitlines() if "  google  " in line]
    assert google_lines[-1].endswith("action=resume"), log
    # scene 8: eu-west alone rolled back while the other regions reached 100%
    assert "google.regions[eu-west]  50% -> 10%" in log
    for region in ("eu-canary", "us-east"):
        assert f"google.regions[{region}]  50% -> 100%" in log, region
    assert (output_dir / "prefect").is_dir()  # Prefect's state stayed in the demo directory
