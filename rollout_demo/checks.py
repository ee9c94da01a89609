"""Pure judgement of the demo: what each tick showed and whether each scene ended as expected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rollout_demo.scenario import Expectation, Scene

__all__ = ["SceneCheck", "TickRecord", "check_scene", "exit_code", "failed_scenes"]


@dataclass(frozen=True)
class TickRecord:
    """One row of the demo's table: a controller run, or an operator's write (run_state "")."""

    at: datetime
    percent: float | None  # the flag's percent afterwards, read back from the store
    decision: str  # "promote", "hold", "recommend promote", "failed", "operator: pause"...
    reason: str
    guard: str | None = None
    run_state: str = ""
    audited: bool = False
    segment: str = ""  # a segmented feature's segment this row is about

    @property
    def is_run(self) -> bool:
        return self.run_state != ""


@dataclass(frozen=True)
class SceneCheck:
    number: int
    title: str
    expected: str
    got: str
    ok: bool


def _describe(last: TickRecord | None, guards: Sequence[str], wanted: Expectation) -> str:
    if last is None:
        return "no controller run"
    percent = "unknown" if last.percent is None else f"{last.percent:g}%"
    text = f"{percent} {last.decision} {last.run_state}"
    shown = [g for g in wanted.guards_seen if g in guards]
    if shown:
        text += f", held by {', '.join(shown)}"
    if wanted.audited is not None:
        text += ", audited" if last.audited else ", nothing written"
    return text


def check_scene(scene: Scene, records: Sequence[TickRecord]) -> SceneCheck:
    """The scene's end against its expectation: the last run's percent, decision and state,
    the guards that held at some run, and (when asked) that the last run was audited."""
    runs = [record for record in records if record.is_run]
    last = runs[-1] if runs else None
    wanted = scene.expected
    if wanted.segments:
        final = {r.segment: r for r in runs if last is not None and r.at == last.at}
        seen = [
            (name, final[name].percent, final[name].decision)
            for name, _, _ in wanted.segments
            if name in final
        ]
        got = ", ".join(f"{n} {'-' if p is None else f'{p:g}%'} {a}" for n, p, a in seen)
        return SceneCheck(
            scene.number,
            scene.title,
            wanted.describe(),
            got or "no run",
            seen == list(wanted.segments),
        )
    guards = [record.guard for record in runs if record.guard]
    ok = (
        last is not None
        and last.percent == wanted.percent
        and last.decision == wanted.action
        and last.run_state == wanted.state
        and all(guard in guards for guard in wanted.guards_seen)
        and (wanted.audited is None or last.audited == wanted.audited)
    )
    got = _describe(last, guards, wanted)
    return SceneCheck(scene.number, scene.title, wanted.describe(), got, ok)


def failed_scenes(checks: Sequence[SceneCheck]) -> list[SceneCheck]:
    return [check for check in checks if not check.ok]


def exit_code(checks: Sequence[SceneCheck], expected_scenes: int) -> int:
    """0 only when every scene ran and ended as expected."""
    return 0 if len(checks) == expected_scenes and not failed_scenes(checks) else 1
