"""`rollout override FEATURE --workspace W | --actor A --on | --off | --clear --reason ...`:
per-workspace and per-actor overrides, audited; without a target, the feature's overrides.

Only typer is imported at load time; Redis and the core load inside the command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollout_cli.shell import EXIT_FAILURE, Outcome, log_audited, now, open_store, run
from rollout_cli.shell import actor as acting_user

__all__ = ["override"]


def override(
    feature: Annotated[str, typer.Argument(help="Feature name, e.g. google.", show_default=False)],
    workspace: Annotated[
        str | None, typer.Option(help="The workspace id your service passes as workspace_id.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="The actor id your service passes as actor_id.")
    ] = None,
    on: Annotated[bool, typer.Option("--on", help="Always show the feature.")] = False,
    off: Annotated[bool, typer.Option("--off", help="Never show the feature.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the override.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why: recorded in the audit trail.")] = None,
    by: Annotated[
        str | None,
        typer.Option(help="Who: recorded in the audit trail. Default: $USER, else the login name."),
    ] = None,
) -> None:
    """Force a feature on or off for one workspace or actor (audited); precedence: hard kill >
    enabled=false > override (actor before workspace) > audience > percent."""

    def command() -> Outcome:
        from rollout_cli.inputs import require_reason
        from rollout_core.config import validate_feature_name
        from rollout_core.errors import ConfigError
        from rollout_core.overrides import read_overrides, write_override

        name = validate_feature_name(feature)
        targets = [
            (kind, unit)
            for kind, unit in (("workspace", workspace), ("actor", actor))
            if unit is not None
        ]
        actions = [value for flag, value in ((on, True), (off, False), (clear, None)) if flag]
        store = open_store()
        if not targets and not actions:
            return Outcome(overrides_text(name, read_overrides(store.client, name)))
        if len(targets) != 1 or len(actions) != 1:
            raise ConfigError(
                "give one target (--workspace W or --actor A) and one of --on, --off, --clear, "
                f'e.g. rollout override {name} --workspace acme --on --reason "beta customer"'
            )
        [(kind, unit)], [value] = targets, actions
        shown = "--clear" if value is None else ("--on" if value else "--off")
        why = require_reason(
            reason, f'rollout override {name} --{kind} {unit} {shown} --reason "..."'
        )
        result = write_override(store, name, kind, unit, value, why, acting_user(by), now())
        if result.write is not None and result.write.unknown:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {result.write.message}",))
        notes = log_audited(store, result.audit_id)
        if result.write is not None and result.write.recovered:
            notes = (f"note: {result.write.message}", *notes)
        message = override_message(name, kind, unit, result.old, value, result.written)
        return Outcome(message, notes=notes)

    run(command)


def _state(value: bool | None) -> str:
    return "none" if value is None else ("on" if value else "off")


def override_message(
    feature: str, kind: str, unit: str, old: bool | None, new: bool | None, written: bool
) -> str:
    """`google: workspace acme override none -> on (audited)`, or already so."""
    if not written:
        return f"{feature}: {kind} {unit} override is already {_state(new)}; nothing written"
    return f"{feature}: {kind} {unit} override {_state(old)} -> {_state(new)} (audited)"


def overrides_text(feature: str, overrides: object) -> str:
    """One line per override, workspaces first; problems named."""
    from rollout_sdk.state import Overrides

    assert isinstance(overrides, Overrides)
    rows = overrides.rows()
    lines = [f"{feature}: {len(rows)} override(s)"]
    lines += [f"  {kind} {unit}: {'on' if is_on else 'off'}" for kind, unit, is_on in rows]
    lines += [f"  ignored: {problem}" for problem in overrides.problems]
    return "\n".join(lines)
