"""The Prefect-side commands: run, deploy, serve, notify.

Each imports Prefect inside the command, so `status`, `set` and `audit` never pay for it.
Exit codes as everywhere: 0 ok (holds included), 1 a Failed run or a failure, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollout_cli.shell import EXIT_FAILURE, Outcome, run

if TYPE_CHECKING:
    from rich.table import Table

    from rollout_core.controller import FeatureOutcome

__all__ = ["deploy", "notify", "outcome_table", "run_json", "run_once", "serve"]

ConfigPath = Annotated[
    Path, typer.Option("--config", help="Rollouts file (features, ladders, SLO profiles).")
]
LiveOrDry = Annotated[
    bool | None,
    typer.Option(
        "--live/--dry-run",
        help="Write flags (--live) or only recommend (--dry-run). "
        "Default: ROLLOUT_DRY_RUN, else a dry run.",
        show_default=False,
    ),
]


def run_once(
    features: Annotated[
        list[str] | None,
        typer.Option("--feature", "-f", help="Only this feature; repeat for more. Default: all."),
    ] = None,
    live: LiveOrDry = None,
    config: ConfigPath = Path("rollouts.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """One pass of the controller flow now; prints its decisions. Exit 1 when the run Failed."""

    def command() -> Outcome:
        from rollout_core.bootstrap import Settings
        from rollout_core.config import load_config

        # bad input is refused here (exit 2) before a flow run exists, so nothing is written
        Settings.from_env()
        load_config(config).select(features or None)
        from flows.controller import outcomes_of, rollout_controller
        from rollout_core.controller import resolve_dry_run

        requested = None if live is None else not live
        dry_run = resolve_dry_run(requested, Settings.from_env().dry_run)  # as the flow does
        state = rollout_controller(
            features=features or None,
            dry_run=dry_run,
            config_path=str(config),
            return_state=True,
        )
        outcomes = outcomes_of(state)
        failed = state.is_failed() or state.is_crashed()
        code = EXIT_FAILURE if failed else 0
        if as_json:
            document = run_json(str(state.name), failed, state.message or "", outcomes, dry_run)
            return Outcome(document, code)
        head = f"run {state.name}: {state.message or ''}".splitlines()[0]
        notes = tuple(
            line for line in (state.message or "").splitlines() if line.startswith("warning")
        )
        output: Any = outcome_table(outcomes, head) if outcomes else head
        return Outcome(output, code, notes)

    run(command)


def run_json(
    state: str, failed: bool, message: str, outcomes: list[FeatureOutcome], dry_run: bool
) -> str:
    """`rollout run --json`: the run's state and mode, and a record per feature, numbers as
    numbers. A run is a dry run or live as a whole: each feature's `dry_run` is the run's,
    a feature that failed before any decision included."""
    import json

    from rollout_core.controller import action_label

    def feature(outcome: FeatureOutcome) -> dict[str, Any]:
        d = outcome.decision
        return {
            "feature": outcome.feature,
            "status": str(outcome.status),
            "action": action_label(outcome),
            "from_percent": None if d is None else d.from_percent,
            "to_percent": None if d is None else d.to_percent,
            "percent": outcome.percent,
            "applied": outcome.applied,
            "dry_run": dry_run,
            "guard": None if d is None else d.guard,
            "reason": outcome.error if d is None else d.reason,
            "slos": [] if d is None else [str(v) for v in d.verdicts],
            "audit_id": outcome.audit_id,
        }

    lines = message.splitlines()
    document = {
        "state": state,
        "failed": failed,
        "dry_run": dry_run,
        "message": lines[0] if lines else "",
        "warnings": [
            line.removeprefix("warning: ") for line in lines if line.startswith("warning")
        ],
        "features": [feature(outcome) for outcome in outcomes],
    }
    return json.dumps(document, indent=2)


def _require_prefect_api() -> str:
    """The Prefect API these commands change. Without one, Prefect would start a throwaway
    local server and report success against a database nobody runs."""
    from prefect.settings import PREFECT_API_URL

    from rollout_core.errors import ConfigError

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set; export it (e.g. http://127.0.0.1:4200/api) or "
            "`source .stack/env.sh` after `rollout stack up`"
        )
    return str(url)


def _unreachable(url: str, error: Exception) -> Outcome:
    from rollout_core.urls import redact_url

    line = f"error: the Prefect API at {redact_url(url)} did not answer ({error}); is it running?"
    return Outcome(code=EXIT_FAILURE, notes=(line,))


def outcome_table(outcomes: list[FeatureOutcome], title: str) -> Table:
    """The run's decisions, a row per feature: the rows of the `rollout-decisions` artifact."""
    from rich.table import Table

    from rollout_core.controller import decision_rows

    table = Table(title=title, title_justify="left")
    for column in ("feature", "status", "before", "after", "action", "guard", "reason", "slos"):
        table.add_column(column, overflow="fold")
    by_name = {outcome.feature: outcome for outcome in outcomes}
    for row in decision_rows(by_name):
        table.add_row(
            *(
                "" if row[key] is None else str(row[key])
                for key in ("feature", "status", "before", "after", "action", "guard")
            ),
            str(row["reason"] or ""),
            str(row["slos"] or ""),
        )
    return table


def deploy(
    project_dir: Annotated[
        Path, typer.Option(help="Directory holding prefect.yaml; runs start there.")
    ] = Path("."),
) -> None:
    """`prefect deploy --all`, keeping a paused controller paused (a plain redeploy un-pauses)."""

    def command() -> Outcome:
        from rollout_core.errors import ConfigError

        directory = project_dir.resolve()
        if not (directory / "prefect.yaml").is_file():
            raise ConfigError(
                f"--project-dir {str(project_dir)!r} has no prefect.yaml; "
                "run from the repository root or pass --project-dir"
            )
        import httpx

        from deployments.deploy import deploy_all

        api = _require_prefect_api()
        try:
            report = deploy_all(directory)  # the pool prefect.yaml names, created if missing
        except RuntimeError as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        except (httpx.HTTPError, OSError) as error:
            return _unreachable(api, error)
        lines = [line for line in report.output.splitlines() if line.strip()]
        kept = (
            f"kept switched off as before: {', '.join(report.restored)}"
            if report.restored
            else "no deployment was paused; none re-paused"
        )
        return Outcome("\n".join([*lines[-12:], kept]))

    run(command)


def serve(
    live: LiveOrDry = None,
    interval: Annotated[int, typer.Option(min=1, help="Seconds between controller runs.")] = 600,
    config: ConfigPath = Path("rollouts.yaml"),
) -> None:
    """Serve both deployments from this process (no work pool, no worker) until Ctrl-C."""

    def command() -> Outcome:
        from rollout_core.bootstrap import Settings
        from rollout_core.config import load_config
        from rollout_core.controller import resolve_dry_run

        load_config(config)  # refuse a bad file now, not at the first scheduled run
        dry_run = resolve_dry_run(None if live is None else not live, Settings.from_env().dry_run)
        from deployments.serve import serve_all

        mode = "dry run" if dry_run else "LIVE"
        typer.echo(f"serving rollout-controller every {interval} s ({mode}) with {config}")
        from deployments.prefect_api import PrefectApiTimeout

        try:
            serve_all(dry_run=dry_run, interval_seconds=interval, config_path=str(config))
        except PrefectApiTimeout as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        return Outcome()

    run(command)


def notify(
    webhook: Annotated[
        str | None,
        typer.Option(
            help="A generic webhook URL: receives a JSON POST (subject, text, body). No query "
            "string: Prefect logs the URL of a failed delivery; authenticate with --webhook-token."
        ),
    ] = None,
    webhook_token: Annotated[
        str | None,
        typer.Option(
            envvar="ROLLOUT_NOTIFY_WEBHOOK_TOKEN",
            help="Sent as `Authorization: Bearer ...` to --webhook; kept in the block's secrets.",
        ),
    ] = None,
    slack: Annotated[str | None, typer.Option(help="A Slack incoming-webhook URL.")] = None,
    teams: Annotated[
        str | None, typer.Option(help="A Microsoft Teams (Workflows) webhook URL.")
    ] = None,
    pagerduty_integration_key: Annotated[
        str | None,
        typer.Option(
            envvar="ROLLOUT_NOTIFY_PAGERDUTY_INTEGRATION_KEY",
            help="PagerDuty Events API v2 routing key (failures and rollbacks only).",
        ),
    ] = None,
    pagerduty_api_key: Annotated[
        str | None,
        typer.Option(envvar="ROLLOUT_NOTIFY_PAGERDUTY_API_KEY", help="PagerDuty API key."),
    ] = None,
) -> None:
    """Create or update, idempotently, the notification blocks and the automations: a failed
    run and a rollback notify every destination; a promotion or recommendation every chat."""

    def command() -> Outcome:
        from deployments.notify import (
            ensure_notifications,
            pagerduty_destination,
            slack_destination,
            teams_destination,
            webhook_destination,
        )
        from rollout_core.errors import ConfigError

        destinations = []
        if webhook:
            destinations.append(webhook_destination(webhook, webhook_token))
        if slack:
            destinations.append(slack_destination(slack))
        if teams:
            destinations.append(teams_destination(teams))
        if pagerduty_integration_key or pagerduty_api_key:
            destinations.append(
                pagerduty_destination(pagerduty_integration_key or "", pagerduty_api_key or "")
            )
        if not destinations:
            raise ConfigError(
                "no destination; pass --webhook, --slack, --teams or the --pagerduty-* keys"
            )
        import httpx

        from deployments.prefect_api import PrefectApiTimeout

        api = _require_prefect_api()
        try:
            setup = ensure_notifications(destinations)
        except PrefectApiTimeout as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        except (httpx.HTTPError, OSError) as error:
            return _unreachable(api, error)
        shown = ", ".join(d.shown for d in destinations)
        lines = [
            f"{'created' if created else 'updated'} automation {name} ({automation_id})"
            for name, automation_id, created in setup.automations
        ]
        lines.append(f"notifying: {shown}")
        return Outcome("\n".join(lines))

    run(command)
