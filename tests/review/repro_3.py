"""Review of int3, item 2 (fast-abort runs no longer move last_success): the stall runbook's
triage still reads a recent push as "runs happen but fail".

Since 1a2dfbe a fast-abort run pushes every total (so `push_time_seconds` is recent) but
leaves the last success alone. The case the change exists for, a broken schedule while
alerts still start abort runs, now shows "success old, push recent", and step 1 of
docs/runbooks/RolloutControllerStalled.md sends the on-call to RolloutControllerFailing
("runs happen but fail"), where every run is Completed and nothing fails. The triage must tell
the two apart (scheduled runs failing vs only abort runs pushing) and point the second case at
the schedule (step 2). The alert's description ("No rollout is being promoted or rolled back
automatically") is also untrue in that case: abort runs still roll back.

Run: .venv/bin/python -m pytest tests/review/repro_3.py
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "runbooks" / "RolloutControllerStalled.md"


def triage_branch() -> str:
    """Step 1's bullet for a recent push with an old success."""
    text = RUNBOOK.read_text(encoding="utf-8")
    start = text.index("success old, push recent")
    return text[start : text.index("\n   - ", start)]


def test_the_stall_triage_for_a_recent_push_names_fast_abort_runs_as_a_cause() -> None:
    branch = triage_branch()
    assert "abort" in branch, (
        "a recent push with an old success is also a broken schedule whose abort runs push; "
        f"the runbook says only: {branch!r}"
    )
