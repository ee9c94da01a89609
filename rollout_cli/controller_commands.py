"""`rollout controller pause|resume|status`: the kill switch in one command, by deployment name.

Each is audited in the `rollout:audit` stream (feature `controller`, action `controller-pause`,
`controller-resume`, or `controller-status` for a read). Exit codes: 0 ok, 1 the Prefect API
or Redis did not answer, 2 bad input (no PREFECT_API_URL, no such deployment).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollout_cli.shell import EXIT_BAD_INPUT, EXIT_FAILURE, Outcome, actor, now, open_store, run

if TYPE_CHECKING:
    from deployments.kill_switch import RunSummary, SwitchState

__all__ = ["AUDIT_FEATURE", "app", "format_status"]

AUDIT_FEATURE = "controller"

app = typer.Typer(
    help="The kill switch: pause, resume or show the controller deployment's schedule.",
    no_args_is_help=True,
)

Deployment = Annotated[
    str,
    typer.Option("--deployment", help="The deployment as flow/deployment."),
]
Reason = Annotated[str | None, typer.Option(help="Why: recorded in the audit trail.")]


By = Annotated[
    str | None,
    typer.Option(help="Who acts, for the audit trail. Default: $USER, else the login name."),
]


def _prefect_api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    from rollout_core.errors import ConfigError

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set; export it (e.g. http://127.0.0.1:4200/api) or "
            "`source .stack/env.sh` after `rollout stack up`"
        )
    return str(url)


def _with_prefect(
    deployment: str, act: Callable[[Any, str], tuple[SwitchState, list[RunSummary]]]
) -> tuple[SwitchState, list[RunSummary]] | Outcome:
    """Run `act(client, deployment)` against PREFECT_API_URL; an Outcome when it cannot."""
    import httpx
    from prefect.exceptions import ObjectNotFound

    from deployments.prefect_api import PrefectApiTimeout, prefect_api
    from rollout_core.errors import ConfigError
    from rollout_core.urls import redact_url

    if deployment.count("/") != 1 or not all(deployment.split("/")):
        raise ConfigError(
            f"--deployment {deployment!r} is not flow/deployment; "
            "e.g. rollout-controller/every-10-minutes"
        )
    url = _prefect_api_url()
    try:
        with prefect_api() as client:
            return act(client, deployment)
    except ObjectNotFound:
        line = (
            f"error: no deployment {deployment!r} on the Prefect API at {redact_url(url)}; "
            "deploy it with `rollout deploy` or pick another with --deployment"
        )
        return Outcome(code=EXIT_BAD_INPUT, notes=(line,))
    except PrefectApiTimeout as error:
        return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
    except (httpx.HTTPError, OSError, RuntimeError) as error:
        line = f"error: the Prefect API at {redact_url(url)} did not answer ({error})"
        line += "; is it running?"
        return Outcome(code=EXIT_FAILURE, notes=(line,))


def _audit(action: str, reason: str, by: str | None) -> str:
    """Append one entry to rollout:audit; its id. A Redis failure raises FlagStoreError."""
    return open_store().record_event(AUDIT_FEATURE, action, reason, actor(by), now())


def _state_words(switch: SwitchState) -> str:
    if not switch.is_switched_off:
        return "RUNNING (schedule active)"
    parts = [f"schedule {s.slug or s.id} inactive" for s in switch.schedules if not s.active]
    if switch.deployment_paused:
        parts.append("deployment paused")
    return "PAUSED (" + ", ".join(parts) + ")"


def format_status(switch: SwitchState, runs: list[RunSummary]) -> str:
    """The human view of `status` (pure)."""
    lines = [f"{switch.name}: {_state_words(switch)}"]
    for s in switch.schedules:
        lines.append(
            f"  schedule {s.slug or '(no slug)'}: {s.description}, "
            f"{'active' if s.active else 'inactive'} (id {s.id})"
        )
    if not switch.schedules:
        lines.append("  no schedule: only manual runs")
    lines.append("  last runs:" if runs else "  no runs yet")
    for r in runs:
        when = r.expected_start.isoformat(timespec="seconds") if r.expected_start else "?"
        lines.append(f"    {when}  {r.state:<10} {r.name}  {r.message}".rstrip())
    return "\n".join(lines)


def _refuse_control_characters(reason: str | None, by: str | None) -> None:
    """Checked before the switch acts: an audit field that could forge log lines is bad
    input (exit 2), never a switch that acted with its audit entry refused."""
    from rollout_cli.inputs import require_one_line

    if reason is not None:
        require_one_line(reason, "--reason")
    actor(by)


def _audit_outcome(text: str, action: str, reason: str, by: str | None) -> Outcome:
    """Append the audit entry; a kill switch that acted is never undone by a Redis failure,
    but the missing entry is an error (exit 1) that says so."""
    from rollout_core.errors import RolloutError

    try:
        entry_id = _audit(action, reason, by)
    except RolloutError as error:
        return Outcome(
            text,
            EXIT_FAILURE,
            (f"error: {action} took effect but its audit entry was NOT written: {error}",),
        )
    return Outcome(text, notes=(f"audited: rollout:audit {entry_id} action={action}",))


@app.command("pause")
def pause(
    deployment: Deployment = "rollout-controller/every-10-minutes",
    reason: Reason = None,
    by: By = None,
) -> None:
    """Switch the controller off: its schedule inactive, future scheduled runs deleted, runs
    already due (Scheduled, Late, Pending) cancelled."""

    def command() -> Outcome:
        from deployments.kill_switch import pause_controller

        _refuse_control_characters(reason, by)
        result = _with_prefect(deployment, lambda c, name: (pause_controller(c, name), []))
        if isinstance(result, Outcome):
            return result
        switch, _ = result
        text = (
            f"{switch.name}: {_state_words(switch)}; no scheduled run starts until "
            f"`rollout controller resume`"
        )
        why = f"{switch.name} paused" + (f": {reason}" if reason else "")
        outcome = _audit_outcome(text, "controller-pause", why, by)
        stalled = (
            "note: RolloutControllerStalled pages about 37 minutes after the last successful "
            "run: silence it"
        )
        return replace(outcome, notes=(*outcome.notes, stalled))

    run(command)


@app.command("resume")
def resume(
    deployment: Deployment = "rollout-controller/every-10-minutes",
    reason: Reason = None,
    by: By = None,
) -> None:
    """Switch the controller back on: its schedule active, the deployment unpaused."""

    def command() -> Outcome:
        from deployments.kill_switch import resume_controller

        _refuse_control_characters(reason, by)
        result = _with_prefect(deployment, lambda c, name: (resume_controller(c, name), []))
        if isinstance(result, Outcome):
            return result
        switch, _ = result
        text = f"{switch.name}: {_state_words(switch)}"
        why = f"{switch.name} resumed" + (f": {reason}" if reason else "")
        return _audit_outcome(text, "controller-resume", why, by)

    run(command)


@app.command("status")
def status(
    deployment: Deployment = "rollout-controller/every-10-minutes",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    runs: Annotated[int, typer.Option(min=1, max=100, help="How many recent runs.")] = 5,
    by: By = None,
) -> None:
    """The schedule (interval, slug), whether it is paused, and the last runs with their states.
    Audited as a read (action controller-status)."""

    def command() -> Outcome:
        from deployments.kill_switch import read_switch, recent_runs

        _refuse_control_characters(None, by)

        def act(client: Any, name: str) -> tuple[SwitchState, list[RunSummary]]:
            switch = read_switch(client, name)
            return switch, recent_runs(client, switch.deployment_id, runs)

        result = _with_prefect(deployment, act)
        if isinstance(result, Outcome):
            return result
        switch, recent = result
        if as_json:
            document = {**switch.to_json(), "runs": [r.to_json() for r in recent]}
            text = json.dumps(document, indent=2)
        else:
            text = format_status(switch, recent)
        why = f"read only: {switch.name} " + ("paused" if switch.is_switched_off else "running")
        return _audit_outcome(text, "controller-status", why, by)

    run(command)
