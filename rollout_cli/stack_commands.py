"""`rollout stack up|down|inject|status`: the real servers, a Prefect server, worker and
deployments, and the Gmail sample service on loopback ports, for trying the product for real.

Loads only typer here; the servers and Prefect load inside the command that needs them.
Exit codes: 0 ok (also `up` when already up and `down` when not up), 1 a failure, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollout_cli.shell import EXIT_BAD_INPUT, EXIT_FAILURE, Outcome, run

if TYPE_CHECKING:
    from deployments.stack import StackState

__all__ = ["app", "stack_json"]

app = typer.Typer(
    help="The whole product on loopback ports: Redis, Prometheus, Pushgateway, Alertmanager, "
    "a Prefect server with worker and deployments, and a sample service. State in .stack/.",
    no_args_is_help=True,
)

StackDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Where the stack keeps its data, logs and stack.json. "
        "Default: $ROLLOUT_STACK_DIR, else .stack",
        show_default=False,
    ),
]


def _describe(state: StackState, heading: str) -> str:
    width = max(len(name) for name in state.urls)
    lines = [heading, ""]
    lines += [f"  {name:<{width}}  {url}" for name, url in state.urls.items()]
    lines += ["", "Point your shell at it (or `source " + f"{state.directory}/env.sh`):", ""]
    lines += [f"  {line}" for line in state.exports().splitlines()]
    return "\n".join(lines)


@app.command("up")
def up(
    directory: StackDir = None,
    random_ports: Annotated[
        bool,
        typer.Option(
            "--random-ports",
            help="Free ports only; by default the usual ones (4200, 9090, ...) when free.",
        ),
    ] = False,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the Prefect UI.")] = True,
    topology: Annotated[
        str | None,
        typer.Option(
            "--topology",
            help="single (one of each, SQLite) or ha (Prefect on PostgreSQL, two workers, "
            "Redis primary + replica + three Sentinels). Default: the topology of the stack "
            "in --dir, else single; another one than the stack there has is refused.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start every server detached; prints the URLs and the environment to export. On a
    stack partly down, starts again only the dead workers, Redis servers and Sentinels (else
    the whole stack; Redis keeps its data either way) and says what it restarted."""

    def command() -> Outcome:
        from deployments.servers import MissingServer, ServerFailedToStart
        from deployments.stack import resolve_stack_dir
        from deployments.stack import up as start_stack

        where = resolve_stack_dir(directory)
        progress = lambda line: print(f"  {line}", file=sys.stderr, flush=True)  # noqa: E731
        try:
            result = start_stack(
                where, usual_ports=not random_ports, ui=ui, log=progress, topology=topology
            )
        except (MissingServer, ServerFailedToStart, RuntimeError) as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: stack not started: {error}",))
        state = result.state
        if result.already_up:
            heading = f"The {state.topology} stack in {where} is already up."
            return Outcome(_describe(state, heading))
        if result.restarted_only:
            heading = f"The stack in {where} is up again: restarted only "
            heading += ", ".join(result.restarted_only) + "."
            return Outcome(_describe(state, heading), notes=tuple(result.notes))
        heading = f"The stack is up in {state.up_seconds:.1f} s (data and logs in {where})."
        heading += "\nDeployments: " + ", ".join(state.deployments)
        return Outcome(_describe(state, heading), notes=tuple(result.notes))

    run(command)


@app.command("down")
def down(directory: StackDir = None) -> None:
    """Stop every process `up` started, by process id (SIGTERM, the worker SIGINT; SIGKILL
    after 10 s)."""

    def command() -> Outcome:
        import time

        from deployments.stack import down as stop_stack
        from deployments.stack import resolve_stack_dir

        where = resolve_stack_dir(directory)
        began = time.perf_counter()
        try:
            stopped = stop_stack(where)
        except RuntimeError as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        if stopped is None:
            return Outcome(f"No stack is up in {where}.")
        names = ", ".join(c.name for c in stopped) or "nothing was still running"
        return Outcome(f"The stack is down in {time.perf_counter() - began:.1f} s: {names}.")

    run(command)


@app.command("inject")
def inject(
    error_rate: Annotated[
        float | None, typer.Option(help="Share of sends that fail, 0..1 (0.05 = 5%).")
    ] = None,
    latency: Annotated[
        float | None, typer.Option(help="Median send latency in seconds, > 0.")
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Back to healthy traffic (the defaults).")
    ] = False,
    directory: StackDir = None,
    segment: Annotated[
        str | None,
        typer.Option(
            help="Only this region's traffic (eu-canary, eu-west, us-east), e.g. eu-west.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change the sample service's traffic, e.g. `--error-rate 0.05 --latency 0.8`; with
    `--segment eu-west` only that region's."""

    def command() -> Outcome:
        from deployments.sample_service import Traffic
        from deployments.stack import STACK_REGIONS, resolve_stack_dir
        from deployments.stack import inject as post_traffic

        bad = _bad_traffic(error_rate, latency, reset)
        if bad is None and segment is not None and segment not in STACK_REGIONS:
            bad = f"--segment {segment!r} is not a region of the sample service; expected one "
            bad += f"of {', '.join(STACK_REGIONS)}"
        if bad:
            return Outcome(code=EXIT_BAD_INPUT, notes=(f"error: {bad}",))
        if reset:
            healthy = Traffic()
            changes = {
                "error_rate": healthy.error_rate,
                "latency": healthy.latency,
                "oauth_failures_per_min": healthy.oauth_failures_per_min,
            }
        else:
            changes = {
                name: value
                for name, value in (("error_rate", error_rate), ("latency", latency))
                if value is not None
            }
        try:
            regions = None if segment is None else [segment]
            states = post_traffic(resolve_stack_dir(directory), changes, regions)
        except (RuntimeError, OSError) as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        lines = [
            f"{provider}: error_rate {t['error_rate']:g}, median latency {t['latency']:g} s, "
            f"{t['rps']:g} sends/s"
            for provider, t in states.items()
        ]
        return Outcome("Sample traffic now:\n" + "\n".join(f"  {line}" for line in lines))

    run(command)


def _bad_traffic(error_rate: float | None, latency: float | None, reset: bool) -> str | None:
    """Why these inject options are refused, or None."""
    if reset and (error_rate is not None or latency is not None):
        return "--reset restores healthy traffic; give it alone, without --error-rate/--latency"
    if not reset and error_rate is None and latency is None:
        return "nothing to change; give --error-rate and/or --latency, or --reset"
    if error_rate is not None and not 0 <= error_rate <= 1:
        return f"--error-rate is {error_rate:g}; expected 0..1 (0.05 = 5% of sends fail)"
    if latency is not None and not latency > 0:
        return f"--latency is {latency:g}; expected seconds > 0 (0.8 = 800 ms median)"
    return None


@app.command("status")
def status(
    directory: StackDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Each process of the stack (running or not) and the URLs. Exit 1 when one of its
    processes is down; 0 when every one runs, or when no stack is up there."""

    def command() -> Outcome:
        from deployments.stack import read_state, resolve_stack_dir

        where = resolve_stack_dir(directory)
        try:
            state = read_state(where)
        except RuntimeError as error:
            return Outcome(code=EXIT_FAILURE, notes=(f"error: {error}",))
        if state is None:
            text = json.dumps(stack_json(where, None)) if as_json else f"No stack is up in {where}."
            return Outcome(text)
        dead = state.dead()
        restart = (
            "run `rollout stack up`: it starts again only dead workers, Redis servers and "
            "Sentinels, else the whole stack (Redis keeps its data either way)"
        )
        notes = (restart,) if dead else ()
        code = EXIT_FAILURE if dead else 0
        if as_json:
            return Outcome(json.dumps(stack_json(where, state), indent=2), code, notes)
        width = max(len(c.name) for c in state.components)
        rows = [
            f"  {c.name:<{width}}  pid {c.pid:<7}  {'running' if c.is_alive() else 'NOT RUNNING'}"
            f"  {c.url}"
            for c in state.components
        ]
        heading = f"The stack in {where}: " + (
            "every process is running." if not dead else f"{len(dead)} process(es) not running"
        )
        text = "\n".join([heading, *rows, "", _describe(state, "URLs:")])
        return Outcome(text, code, notes)

    run(command)


def stack_json(where: Path, state: StackState | None) -> dict[str, Any]:
    """`stack status --json`: whether a stack is up, each process with `running`, the URLs
    and the environment to export."""
    if state is None:
        return {"directory": str(where), "up": False, "all_running": False, "components": []}
    components = [
        {"name": c.name, "pid": c.pid, "running": c.is_alive(), "url": c.url, "log": c.log}
        for c in state.components
    ]
    return {
        "directory": str(where),
        "up": True,
        "all_running": all(c["running"] for c in components),
        "components": components,
        "urls": state.urls,
        "env": state.env,
        "deployments": state.deployments,
    }
