"""Trust before going live: `rollout backtest`, `rollout tune` and `rollout explain`.

backtest replays the controller's own pure pass over Prometheus history (query_range, a few
requests) or a recorded series; tune suggests thresholds from that history; explain replays
one audited decision's recorded inputs through today's policy and guards.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollout_cli.shell import Outcome, now, run

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Group
    from rich.table import Table

    from rollout_core.audit import AuditEntry
    from rollout_core.backtest import BacktestResult
    from rollout_core.config import FeatureSpec
    from rollout_core.replay import ReplaySource
    from rollout_core.tune import SloSuggestion

__all__ = ["backtest", "explain", "parse_moment", "tune"]

ConfigPath = Annotated[
    Path, typer.Option("--config", help="Rollouts file; pass a candidate to compare configs.")
]
Start = Annotated[
    str | None,
    typer.Option(
        help="ISO-8601 time (naive is UTC), or now-30d. Default with --series: its start."
    ),
]
End = Annotated[
    str | None, typer.Option(help="ISO-8601 time or now. Default: now (or the series' end).")
]
Step = Annotated[str, typer.Option(help="One simulated controller pass per step, e.g. 10m.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Series = Annotated[
    Path | None,
    typer.Option(
        help="Replay this recorded series (CSV/Parquet, the ReplaySource format) offline."
    ),
]


def parse_moment(text: str, clock: datetime) -> datetime:
    """`2026-01-05T10:00:00Z`, a naive time (UTC), `now`, or `now-7d` / `now-90m`."""
    from rollout_core.config import parse_duration
    from rollout_core.errors import ConfigError

    cleaned = text.strip()
    if cleaned.startswith("now"):
        rest = cleaned[3:].strip()
        if not rest:
            return clock
        if rest.startswith("-"):
            try:
                return clock - parse_duration(rest[1:].strip())
            except ValueError as exc:
                raise ConfigError(f"time {text!r}: {exc}") from None
        raise ConfigError(f"time {text!r} is invalid; expected now, now-7d or an ISO-8601 time")
    try:
        moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"time {text!r} is invalid; expected ISO-8601 such as 2026-01-05T10:00:00Z, "
            "now or now-7d"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _step(text: str) -> timedelta:
    from rollout_core.config import parse_duration
    from rollout_core.errors import ConfigError

    try:
        step = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--step {text!r}: {exc}") from None
    if step < timedelta(seconds=1):
        raise ConfigError(f"--step {text!r} is too short; expected e.g. 10m (the flow's interval)")
    return step


def _history(
    specs: list[FeatureSpec],
    series: Path | None,
    start: str | None,
    end: str | None,
    step: timedelta,
) -> tuple[ReplaySource, pd.DataFrame, datetime, datetime, int]:
    """The readings over the range (from the file, or from Prometheus) as a source to replay
    and as read, the range, and how many range requests were sent (0 offline). One validation
    for backtest and tune: a file's content errors name the file; a file must hold every SLO
    of the feature in the range; a query the live controller could not read is refused."""
    from rollout_core.backtest import tick_count
    from rollout_core.errors import ConfigError
    from rollout_core.history import query_errors
    from rollout_core.replay import ReplaySource

    clock = now()
    if series is not None:
        from rollout_core.replay import read_series

        frame = read_series(series)
        staleness = max(step, timedelta(minutes=5))  # rows need not fall on the ticks
        source = ReplaySource(frame, staleness=staleness, name=str(series))
        span = source.span
        if span is None:
            raise ConfigError(f"{series}: no rows; nothing to replay")
        first = parse_moment(start, clock) if start else span[0]
        last = parse_moment(end, clock) if end else span[1]
        tick_count(first, last, step)
        source.check_covers(specs, first, last)
        requests = 0
    else:
        if start is None:
            raise ConfigError("--start is missing; e.g. --start now-30d (or replay --series FILE)")
        from rollout_cli.shell import settings
        from rollout_core.history import RangeReader

        config = settings()
        first = parse_moment(start, clock)
        last = parse_moment(end, clock) if end else clock
        tick_count(first, last, step)  # refused before any request when too many
        if first > clock:
            raise ConfigError(
                f"--start {first.isoformat()} is in the future (now is {clock.isoformat()}): "
                "Prometheus holds nothing there to replay; pick a past range, e.g. --start now-30d"
            )
        reader = RangeReader(config.prometheus_url, timeout=max(config.prometheus_timeout, 30.0))
        frame = reader.read(specs, first, last, step)
        # a row at every tick, each exactly what Prometheus answered there: never the tick before
        source = ReplaySource(frame, staleness=timedelta(0), name=f"Prometheus at {reader.url}")
        requests = reader.requests_sent
    broken = query_errors(frame)
    if broken is not None:
        raise ConfigError(
            f"{broken}; the live controller holds on such a reading and fails the run as a "
            "configuration error, so this history cannot say what it would have done: fix the "
            "query (or pass a --config with the fixed query) and run again"
        )
    return source, frame, first, last, requests


def _replay(
    units: list[FeatureSpec],
    source: ReplaySource,
    first: datetime,
    last: datetime,
    step: timedelta,
    from_percent: float,
) -> dict[str, BacktestResult]:
    """The feature's units (itself, or each of its segments) replayed in one pass per tick."""
    from rollout_core.backtest import backtest as run_backtest

    return run_backtest(units, source, first, last, step, from_percent)


def _units(spec: FeatureSpec) -> list[FeatureSpec]:
    from rollout_core.config import expand_segments

    return expand_segments([spec])


def _duration(span: timedelta | None) -> str:
    from rollout_core.guards import format_duration

    return "never" if span is None else format_duration(span)


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of a summary as `combined_json` gives it (a feature's or its segments' sum)."""
    causes = summary["holds_by_cause"].items()
    holds = ", ".join(f"{cause} {count}" for cause, count in causes) or "none"
    to_full = summary["time_to_full"]
    return [
        ("promotions", str(summary["promotions"])),
        ("rollbacks", str(summary["rollbacks"])),
        ("holds", f"{summary['holds']} ({holds})"),
        ("ticks with no data", str(summary["no_data_ticks"])),
        ("time to 100%", _duration(None if to_full is None else timedelta(seconds=to_full))),
        ("exposure to breached SLOs", f"{summary['breached_exposure_percent_hours']:.1f} %·h"),
        ("ticks", str(summary["ticks"])),
    ]


def backtest_view(body: dict[str, Any], requests: int) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    segmented = "segments" in body
    columns = ["time", *(["segment"] if segmented else []), "action", "change"]
    changes = Table(*columns, "reason and evidence", title="simulated changes")
    for change in body["changes"]:
        changes.add_row(
            change["time"].replace("T", " ")[:16],
            *([change["segment"]] if segmented else []),
            change["action"],
            f"{change['from_percent']:g}% -> {change['to_percent']:g}%",
            Text(change["reason"]),
        )
    title = (
        f"summary: {body['feature']}, {body['start']} .. {body['end']} every "
        f"{_duration(timedelta(seconds=body['step']))}"
    )
    parts = {"all segments" if segmented else "": body["summary"]}
    if segmented:
        parts.update({name: part["summary"] for name, part in body["segments"].items()})
    summary = Table("", *parts, title=title)
    rows = [summary_rows(part) for part in parts.values()]
    for index, (name, _) in enumerate(rows[0]):
        summary.add_row(name, *(row[index][1] for row in rows))
    if requests:
        summary.add_row("Prometheus range requests", str(requests), *([""] * (len(parts) - 1)))
    return Group(changes if body["changes"] else Text("no simulated changes"), summary)


def _png(
    result: BacktestResult,
    spec: FeatureSpec,
    frame: pd.DataFrame,
    path: Path,
    from_percent: float,
) -> None:
    """The demo's timeline for one unit: its first ratio SLO and one other, against max."""
    import pandas as pd

    from rollout_demo.checks import TickRecord
    from rollout_demo.timeline import draw_timeline

    records = [
        TickRecord(t.at, t.percent, t.action, t.reason)
        for t in result.ticks
        if t.action != "hold" or t is result.ticks[-1]
    ]
    ratio = next((s for s in spec.slos if s.kind == "ratio"), spec.slos[0])
    other = next((s for s in spec.slos if s.name != ratio.name), ratio)
    plotted = frame.copy()
    plotted["time"] = pd.to_datetime(plotted["time"], utc=True, format="ISO8601")
    draw_timeline(
        plotted,
        records,
        path,
        feature=spec.name,
        start=result.start,
        initial_percent=from_percent,
        error_slo=(ratio.name, ratio.max),
        latency_slo=(other.name, other.max),
        title=f"Backtest of {spec.name!r}: {result.start:%Y-%m-%d} .. {result.end:%Y-%m-%d}",
        demo_spans=False,
    )


def backtest(
    feature: Annotated[str, typer.Argument(help="The feature, as in rollouts.yaml.")],
    start: Start = None,
    end: End = None,
    step: Step = "10m",
    config: ConfigPath = Path("rollouts.yaml"),
    from_percent: Annotated[str, typer.Option(help="The percent at --start, e.g. 10.")] = "0",
    as_json: AsJson = False,
    png: Annotated[Path | None, typer.Option(help="Draw the timeline to this PNG.")] = None,
    series: Series = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Write the readings read from Prometheus to this Parquet/CSV file."),
    ] = None,
) -> None:
    """What the controller would have done over past traffic: its own pass, replayed."""

    def command() -> Outcome:
        from rollout_cli.inputs import parse_percent_argument
        from rollout_core.backtest import combined_json
        from rollout_core.config import load_config
        from rollout_core.errors import ConfigError

        spec = load_config(config).feature(feature)
        units = _units(spec)
        percent = parse_percent_argument(from_percent)  # quoted as typed in any error
        tick = _step(step)
        if png is not None:
            _check_png(png)  # before any read or write, so a bad path costs nothing
        source, frame, first, last, requests = _history(units, series, start, end, tick)
        notes: list[str] = []
        if export is not None:
            _export(frame, export)
            notes.append(f"wrote {len(frame)} readings to {export}")
        results = _replay(units, source, first, last, tick, percent)
        if png is not None:
            for unit in units:
                path = png if len(units) == 1 else _segment_path(png, unit.segment or unit.name)
                try:
                    _png(results[unit.name], unit, frame, path, percent)
                except OSError as exc:
                    raise ConfigError(
                        f"--png {path}: cannot write it ({exc.strerror or exc}); choose a "
                        "writable path"
                    ) from None
                notes.append(f"timeline written to {path}")
        body = {**combined_json(feature, results), "range_requests": requests}
        if as_json:
            return Outcome(json.dumps(body, indent=2), notes=tuple(notes))
        return Outcome(backtest_view(body, requests), notes=tuple(notes))

    run(command)


def _check_png(path: Path) -> None:
    """A PNG file name whose folder is (or can be made) a folder: matplotlib would write
    `DIR.png` beside a directory, and a suffix other than .png in another format."""
    from rollout_core.errors import ConfigError

    if path.is_dir():
        raise ConfigError(
            f"--png {path} is a directory; name the file to write, e.g. {path / 'timeline.png'}"
        )
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--png {path}: expected a file name ending in .png, e.g. timeline.png")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(
            f"--png {path}: {blocker} is a file, not a folder; choose a writable path"
        )


def _segment_path(path: Path, segment: str) -> Path:
    """`timeline.png` -> `timeline-eu-west.png`: one timeline per segment."""
    return path.with_name(f"{path.stem}-{segment}{path.suffix}")


def _export(frame: pd.DataFrame, path: Path) -> None:
    from rollout_core.errors import ConfigError

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            out = frame.copy()
            out["time"] = [t.isoformat().replace("+00:00", "Z") for t in out["time"]]
            out.to_csv(path, index=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}; choose a writable path") from None


def suggestion_table(suggestions: list[SloSuggestion]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(
        "SLO",
        "max",
        "min_samples",
        "false rollback / eval",
        "detects",
        "healthy",
        title="suggestion",
    )
    for s in suggestions:
        table.add_row(
            s.name,
            f"{s.current_max:g} -> {s.max:g}",
            f"{s.current_min_samples} -> {s.min_samples}",
            f"{s.expected_false_rollback:.4%}",
            Text(s.detects),
            Text(f"{s.healthy}; {s.excluded} of {s.windows} windows set aside as incidents"),
        )
    return table


def tune(
    feature: Annotated[str, typer.Argument(help="The feature, as in rollouts.yaml.")],
    start: Start = None,
    end: End = None,
    step: Step = "10m",
    config: ConfigPath = Path("rollouts.yaml"),
    false_rollback: Annotated[
        float, typer.Option(help="Target false-rollback rate per evaluation.")
    ] = 0.005,
    as_json: AsJson = False,
    series: Series = None,
) -> None:
    """Suggest each SLO's max and min_samples from the feature's own history."""

    def command() -> Outcome:
        from rich.table import Table

        from rollout_core.backtest import combined_json, ticks_between
        from rollout_core.config import load_config, parse_config
        from rollout_core.tune import config_text, suggest

        spec = load_config(config).feature(feature)
        units = _units(spec)
        tick = _step(step)
        source, _, first, last, requests = _history(units, series, start, end, tick)
        # the evaluations the side-by-side backtest replays: each tick of the range, at --step
        readings = source.readings(units, ticks_between(first, last, tick))
        names = [unit.name for unit in units]  # a segmented feature's segments pooled
        suggestions = suggest(spec, readings, false_rollback, tick.total_seconds(), units=names)
        text = config_text(spec, suggestions)
        suggested = parse_config(text, "<suggestion>").feature(feature)
        current_run = combined_json(feature, _replay(units, source, first, last, tick, 0.0))
        tuned_units = _units(suggested)
        suggested_run = combined_json(feature, _replay(tuned_units, source, first, last, tick, 0.0))
        if as_json:
            body = {
                "feature": feature,
                "slos": [s.to_json() for s in suggestions],
                "config": text,
                "backtest": {
                    "current": current_run["summary"],
                    "suggested": suggested_run["summary"],
                },
                "range_requests": requests,
            }
            return Outcome(json.dumps(body, indent=2))
        compare = Table("", "current", "suggested", title="backtest over the same history")
        for (name, before), (_, after) in zip(
            summary_rows(current_run["summary"]),
            summary_rows(suggested_run["summary"]),
            strict=True,
        ):
            compare.add_row(name, before, after)
        # the rollouts.yaml snippet as plain text: Rich would crop its long query lines
        return Outcome([suggestion_table(suggestions), text, compare])

    run(command)


def explain(
    audit_id: Annotated[str, typer.Argument(help="The audit entry id, e.g. 1767600000000-0.")],
    config: ConfigPath = Path("rollouts.yaml"),
    as_json: AsJson = False,
) -> None:
    """Replay an audited decision's recorded inputs through today's policy and guards."""

    def command() -> Outcome:
        from rollout_cli.shell import open_store
        from rollout_core.audit import read_entry
        from rollout_core.config import load_config
        from rollout_core.decision_inputs import DecisionInputs
        from rollout_core.errors import ConfigError

        entry_id = audit_entry_id(audit_id)
        entry = read_entry(open_store().client, entry_id)
        if entry is None:
            raise ConfigError(
                f"audit entry {entry_id!r} is not in rollout:audit (trimmed, or a typo); list "
                "entries with `rollout audit FEATURE --verbose`"
            )
        if not entry.inputs:
            raise ConfigError(no_inputs_message(entry))
        try:  # a segment's decision is its unit's, `google[eu-west]`
            inputs = DecisionInputs.from_json(entry.subject, entry.inputs)
        except ValueError as exc:
            raise ConfigError(f"audit entry {entry_id}: {exc}") from None
        from rollout_core.config import expand_segments
        from rollout_core.explain import explain_inputs

        rollouts = load_config(config)
        spec = rollouts.features.get(entry.feature)
        if spec is not None and entry.segment:  # replayed through the segment's own spec
            units = {unit.name: unit for unit in expand_segments([spec])}
            spec = units.get(entry.subject)
        explanation = explain_inputs(inputs, spec, entry.time, dry_run=entry.dry_run)
        if as_json:
            return Outcome(json.dumps(explanation.to_json(), indent=2))
        return Outcome(explain_text(entry_id, entry.reason, explanation.to_json()))

    run(command)


_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def audit_entry_id(text: str) -> str:
    """An AUDIT_ID as the stream writes it (`1767600000000-0`); ConfigError naming the form
    otherwise, before any request: a typo is bad input, not a Redis failure."""
    from rollout_core.errors import ConfigError

    cleaned = text.strip()
    found = _STREAM_ID.fullmatch(cleaned)
    if found is None or any(int(part) >= 2**64 for part in found.groups()):
        raise ConfigError(
            f"AUDIT_ID {text!r:.80} is not an audit entry id; expected a stream id such as "
            "1767600000000-0 (milliseconds-sequence), as `rollout audit FEATURE --verbose` "
            "lists them"
        )
    return cleaned


def no_inputs_message(entry: AuditEntry) -> str:
    """Why an entry without recorded inputs cannot be explained: an operator's write, or a
    controller decision written before decisions recorded their inputs."""
    from rollout_core.flags import format_time

    what = f"{entry.action or 'a write'} by {entry.by or 'an unnamed writer'}"
    if entry.by == "controller":
        return (
            f"audit entry {entry.id} ({what} at {format_time(entry.time)}) predates recorded "
            "decision inputs: the controller that wrote it did not record them yet, so there "
            "is nothing to replay"
        )
    return (
        f"audit entry {entry.id} ({what}) records no decision inputs: it is not a controller "
        "decision; only the controller's changes and recommendations can be explained"
    )


def explain_text(audit_id: str, reason: str, body: dict[str, Any]) -> str:
    recorded, replayed = body["recorded"], body["replayed"]
    verdict = "reproduces" if body["reproduces"] else "differs"
    # a dry run's entry is a recommendation: the flag was never changed (as `rollout audit`
    # shows it, `recommend 0% -> 10%`)
    recommended = recorded.get("dry_run", False)
    action = f"recommend {recorded['action']}" if recommended else recorded["action"]
    note = " (dry run: not applied)" if recommended else ""
    lines = [
        f"audit {audit_id}: {verdict}",
        f"  recorded: {action} {recorded['from_percent']:g}% -> "
        f"{recorded['to_percent']:g}%{note} ({reason})",
    ]
    if replayed.get("action"):
        lines.append(
            f"  today:    {replayed['action']} {replayed['from_percent']:g}% -> "
            f"{replayed['to_percent']:g}% ({replayed['reason']})"
        )
    lines.append(
        f"  config {recorded['config_hash']} then, {replayed.get('config_hash', '-')} today; "
        f"version {recorded['version']} then, {replayed.get('version', '-')} today"
    )
    lines += [f"  - {line}" for line in body["differences"]]
    return "\n".join(lines)
