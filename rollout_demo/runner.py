"""The demo's imperative shell: embedded Redis, Prefect's ephemeral API, the scenes in order.

Every tick is a real `rollout_controller` flow run; the adapters go in through
`use_adapters` and the simulated clock through the flow's `now` parameter, nothing patched.
Import this module only after `apply_demo_environment` (Prefect reads its settings at import).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from flows.controller import outcomes_of, rollout_controller
from rollout_core.audit import log_path, rebuild_rollout_log
from rollout_core.bootstrap import Adapters, Settings, use_adapters
from rollout_core.controller import action_label
from rollout_core.flags import RedisFlagStore
from rollout_core.replay import ReplaySource
from rollout_demo.adapters import RecordedTelemetry, embedded_redis
from rollout_demo.checks import SceneCheck, TickRecord, check_scene, exit_code, failed_scenes
from rollout_demo.display import (
    print_row,
    print_scene_heading,
    print_scene_result,
    summary_table,
)
from rollout_demo.prefect_api import EphemeralApi
from rollout_demo.scenario import (
    DEMO_CONFIG,
    FEATURE,
    REGIONAL_FEATURE,
    REGIONS,
    SCENES,
    START,
    Operator,
    Scene,
    Tick,
    at_minute,
    build_series,
)
from rollout_demo.timeline import draw_timeline
from rollout_sdk import RolloutClient

__all__ = ["run_demo"]

OPERATOR = "demo-operator"


@dataclass
class _Demo:
    """What the scenes act on and what they recorded."""

    store: RedisFlagStore
    source: ReplaySource
    config_path: Path
    gate: RolloutClient
    records: list[TickRecord] = field(default_factory=list)
    # (the flag's percent, the percent the services' gate served) after each step
    served: list[tuple[float | None, float]] = field(default_factory=list)


def run_demo(output_dir: Path, console: Console, api: EphemeralApi, started: float) -> int:
    """All scenes, the summary, the audit log and the timeline; 0 when every scene ended as
    expected, else 1."""
    audit_path = log_path(Settings.from_env().audit_log_path)
    png_path = output_dir / "timeline.png"
    for stale in (audit_path, png_path):
        stale.unlink(missing_ok=True)
    config_path = output_dir / "rollouts.yaml"
    config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    series = build_series()
    source = ReplaySource(series)
    telemetry = RecordedTelemetry()
    checks: list[SceneCheck] = []
    records: list[TickRecord] = []
    with ExitStack() as cleanup:
        cleanup.callback(api.stop)
        cleanup.callback(_drain_prefect_workers)  # runs first: logs and events reach the API
        with console.status("Starting Redis; waiting for Prefect's ephemeral API..."):
            redis_server = cleanup.enter_context(embedded_redis(output_dir / "redis"))
            store = RedisFlagStore(redis_server.client)
            store.init(FEATURE, at=START, by=OPERATOR)
            store.init_segments(REGIONAL_FEATURE, ["region"], REGIONS, 0, START, OPERATOR)
            api.wait_ready()
        console.print(f"Redis: {redis_server.description}")
        console.print(f"Prefect: ephemeral API at {api.url}, PREFECT_HOME={prefect_home()}")
        console.print(f"Set-up took {time.monotonic() - started:.1f} s")
        # the services' side: the gate a request handler asks, refreshed after each step as its
        # background thread would (the demo's time is simulated, so no thread runs)
        gate = RolloutClient(client=redis_server.client, environ={}, start=False)
        demo = _Demo(store, source, config_path, gate, records)
        adapters = Adapters(store, source, telemetry, redis_server.client)
        try:
            with use_adapters(adapters):
                for scene in SCENES:
                    checks.append(_play_scene(demo, scene, console))
        except Exception as error:  # the summary still says which scenes never ran
            console.print(f"[bold red]The demo stopped: {type(error).__name__}: {error}")
        finally:
            entries = rebuild_rollout_log(redis_server.client, audit_path)
    draw_timeline(series, records, png_path)
    return _report(console, checks, audit_path, entries, png_path, telemetry, started, demo.served)


def prefect_home() -> str:
    return os.environ.get("PREFECT_HOME", "~/.prefect")


def _drain_prefect_workers() -> None:
    """Send the queued run logs and events while the API still answers; otherwise Prefect
    retries them against the stopped server at exit, for over a minute."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


def _play_scene(demo: _Demo, scene: Scene, console: Console) -> SceneCheck:
    print_scene_heading(console, scene)
    if scene.outage is not None:
        demo.source.add_outage(at_minute(scene.outage[0]), at_minute(scene.outage[1]))
    scene_records = []
    for step in scene.steps:
        if scene.feature != FEATURE:
            assert isinstance(step, Tick)
            for record in _tick_segments(demo, step, scene.feature):
                print_row(console, record)
                scene_records.append(record)
            continue
        record = _operate(demo.store, step) if isinstance(step, Operator) else _tick(demo, step)
        demo.gate.refresh([FEATURE])
        demo.served.append((record.percent, demo.gate.percent(FEATURE)))
        print_row(console, record)
        scene_records.append(record)
    if scene.feature == FEATURE:  # the timeline draws the main feature
        demo.records.extend(scene_records)
    check = check_scene(scene, scene_records)
    print_scene_result(console, check)
    return check


def _tick(demo: _Demo, tick: Tick) -> TickRecord:
    at = at_minute(tick.minute)
    state = rollout_controller(
        features=[FEATURE],
        dry_run=tick.dry_run,
        config_path=str(demo.config_path),
        now=at,
        return_state=True,
    )
    percent = demo.store.read([FEATURE])[FEATURE].percent
    outcome = next((o for o in outcomes_of(state) if o.feature == FEATURE), None)
    if outcome is None:
        reason = (state.message or "no outcome").splitlines()[0]
        return TickRecord(at, percent, "crashed", reason, run_state=str(state.name))
    decision = outcome.decision
    reason = (outcome.error or "") if decision is None else decision.reasons[0]
    return TickRecord(
        at,
        percent,
        action_label(outcome),
        reason,
        guard=None if decision is None else decision.guard,
        run_state=str(state.name),
        audited=outcome.audit_id is not None,
    )


def _tick_segments(demo: _Demo, tick: Tick, feature: str) -> list[TickRecord]:
    """One flow run of a segmented feature: a row per segment, and what the gate serves in
    each region checked against the segment's percent."""
    at = at_minute(tick.minute)
    state = rollout_controller(
        features=[feature],
        dry_run=tick.dry_run,
        config_path=str(demo.config_path),
        now=at,
        return_state=True,
    )
    outcomes = {o.feature: o for o in outcomes_of(state)}
    units = [f"{feature}[{region}]" for region in REGIONS]
    states = demo.store.read(units)
    demo.gate.refresh([feature])
    records = []
    for region, unit in zip(REGIONS, units, strict=True):
        percent = states[unit].percent
        served = demo.gate.evaluate(feature, {"actor_id": "demo", "region": region}).percent
        demo.served.append((percent, served))
        outcome = outcomes.get(unit)
        decision = None if outcome is None else outcome.decision
        reason = (
            (state.message or "no outcome").splitlines()[0]
            if outcome is None
            else ((outcome.error or "") if decision is None else decision.reasons[0])
        )
        records.append(
            TickRecord(
                at,
                percent,
                "crashed" if outcome is None else action_label(outcome),
                reason,
                guard=None if decision is None else decision.guard,
                run_state=str(state.name),
                audited=outcome is not None and outcome.audit_id is not None,
                segment=region,
            )
        )
    return records


def _operate(store: RedisFlagStore, step: Operator) -> TickRecord:
    at = at_minute(step.minute)
    if step.kind == "audience_public":
        reason = "internal rollout done; open to everyone, starting over at 0%"
        store.set_audience(FEATURE, internal_only=False, reason=reason, by=OPERATOR, at=at)
    else:
        paused = step.kind == "pause"
        reason = "on-call investigates a customer report" if paused else "report unrelated"
        store.set_paused(FEATURE, paused, reason, by=OPERATOR, at=at)
    percent = store.read([FEATURE])[FEATURE].percent
    label = "audience public" if step.kind == "audience_public" else step.kind
    return TickRecord(at, percent, f"operator: {label}", reason, audited=True)


def _report(
    console: Console,
    checks: list[SceneCheck],
    audit_path: Path,
    audit_entries: int,
    png_path: Path,
    telemetry: RecordedTelemetry,
    started: float,
    served: list[tuple[float | None, float]],
) -> int:
    console.print()
    console.print(summary_table(checks))
    runs = len(telemetry.runs)
    statuses = ", ".join(
        f"{status} {telemetry.count(status)}"
        for status in sorted({r.status for r in telemetry.runs})
    )
    console.print(f"Controller flow runs: {runs} ({statuses})")
    console.print(f"Audit log (Markdown, {audit_entries} entries): {audit_path.resolve()}")
    console.print(f"Timeline (PNG): {png_path.resolve()}")
    mismatched = [(flag, gate) for flag, gate in served if (flag or 0.0) != gate]
    console.print(
        f"Gate (rollout_sdk.RolloutClient): served the flag's percent after "
        f"{len(served) - len(mismatched)} of {len(served)} steps"
    )
    console.print(f"Wall time: {time.monotonic() - started:.1f} s")
    code = exit_code(checks, len(SCENES))
    if mismatched:
        flag, gate = mismatched[0]
        console.print(f"[bold red]The gate served {gate:g}% while the flag was {flag}%")
        code = 1
    for check in failed_scenes(checks):
        console.print(
            f"[bold red]Scene {check.number} ({check.title}) did not end as expected: "
            f"expected {check.expected}; got {check.got}"
        )
    if len(checks) < len(SCENES):
        console.print(f"[bold red]Only {len(checks)} of {len(SCENES)} scenes ran")
    return code
