"""What the demo prints: a heading per scene, one table row per tick as it happens (fixed
column widths, so the rows of a scene line up as one table), and the final summary."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollout_demo.checks import SceneCheck, TickRecord
from rollout_demo.scenario import Scene

__all__ = ["print_row", "print_scene_heading", "print_scene_result", "summary_table"]

_COLUMNS = (("sim. time", 10), ("percent", 8), ("decision", 24), ("guard", 9), ("run", 10))
_STYLES = {"promote": "green", "rollback": "bold red", "failed": "bold red", "hold": "yellow"}


def _row_table(cells: Sequence[str | Text], header: bool = False) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1), expand=False)
    for _, width in _COLUMNS:
        table.add_column(width=width, no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_row(*cells, style="bold" if header else None)
    return table


def print_scene_heading(console: Console, scene: Scene) -> None:
    console.print()
    console.rule(f"[bold]Scene {scene.number}: {scene.title}", align="left")
    console.print(f"[dim]{scene.story}")
    console.print(_row_table([name for name, _ in _COLUMNS] + ["reason"], header=True))


def print_row(console: Console, record: TickRecord) -> None:
    percent = "-" if record.percent is None else f"{record.percent:g}%"
    decision = Text(record.decision, style=_decision_style(record.decision))
    cells: list[str | Text] = [
        record.at.strftime("%a %H:%M"),
        percent,
        decision,
        record.guard or "",
        record.run_state or "(operator)",
        Text(f"{record.segment}: {record.reason}") if record.segment else record.reason,
    ]
    console.print(_row_table(cells))


def _decision_style(decision: str) -> str:
    if decision.startswith("operator"):
        return "cyan"
    if decision.startswith("recommend"):
        return "blue"
    return _STYLES.get(decision, "")


def print_scene_result(console: Console, check: SceneCheck) -> None:
    mark = "[green]as expected" if check.ok else "[bold red]NOT as expected"
    console.print(f"  -> {mark}[/]: expected {check.expected}; got {check.got}")


def summary_table(checks: Sequence[SceneCheck]) -> Table:
    table = Table(title="Demo summary", title_justify="left")
    for column in ("scene", "expected", "got", "result"):
        table.add_column(column)
    for check in checks:
        result = "[green]as expected" if check.ok else "[bold red]NOT as expected"
        table.add_row(f"{check.number}. {check.title}", check.expected, check.got, result)
    return table
