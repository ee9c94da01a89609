"""`rollout`: the operator's command line for flag rollouts.

Commands live in small modules that import only typer when loaded (redis, pydantic and prefect
load inside the command that needs them), and each is registered here with one line, e.g.
`app.command("run")(flow_commands.run_once)`. Exit codes: 0 ok, 2 bad input, 1 failure.
"""

from __future__ import annotations

import typer

from rollout_cli import (
    bridge_command,
    controller_commands,
    demo_command,
    flag_commands,
    flow_commands,
    history_commands,
    override_commands,
    stack_commands,
)

__all__ = ["app"]

app = typer.Typer(
    name="rollout",
    help="Progressive feature-flag rollouts: flags in Redis (REDIS_URL), audited changes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold REDIS_URL and its password
)

app.command("init")(flag_commands.init)
app.command("status")(flag_commands.status)
app.command("set")(flag_commands.set_percent)
app.command("pause")(flag_commands.pause)
app.command("resume")(flag_commands.resume)
app.command("audience")(flag_commands.audience)
app.command("audit")(flag_commands.audit)
app.command("override")(override_commands.override)
app.command("run")(flow_commands.run_once)
app.command("deploy")(flow_commands.deploy)
app.command("serve")(flow_commands.serve)
app.command("notify")(flow_commands.notify)
app.command("alert-bridge")(bridge_command.alert_bridge)
app.command("demo")(demo_command.demo)
app.command("backtest")(history_commands.backtest)
app.command("tune")(history_commands.tune)
app.command("explain")(history_commands.explain)
app.add_typer(stack_commands.app, name="stack")
app.add_typer(controller_commands.app, name="controller")

if __name__ == "__main__":
    app()
