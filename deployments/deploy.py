"""`rollout deploy`: `prefect deploy --all`, keeping a paused controller paused.

Prefect 3.9's `prefect deploy` sets a paused deployment back to unpaused. An operator who
paused the controller (the kill switch) must not find it running again after a routine
redeploy, so this reads every prefect.yaml deployment by name before deploying and re-applies
its pause afterwards, in a `finally`: also when the deploy failed or was interrupted (Ctrl-C).
When that restore fails, KillSwitchOff says loudly that the controller is running again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from deployments.kill_switch import SwitchState, read_switch
from deployments.prefect_api import api_env, prefect_api

__all__ = [
    "DeployReport",
    "KillSwitchOff",
    "deploy_all",
    "deployment_names",
    "ensure_work_pool",
    "prefect_executable",
    "read_pause_states",
    "restore_pauses",
]


class KillSwitchOff(RuntimeError):
    """A deployment the operator had switched off could not be switched off again after the
    deploy: it is RUNNING. The message names each one and the command that pauses it."""

    def __init__(self, names: list[str], cause: BaseException) -> None:
        self.names = names
        commands = "; ".join(f"rollout controller pause --deployment {n}" for n in names)
        super().__init__(
            f"THE KILL SWITCH IS OFF: {', '.join(names)} had been paused before the deploy and "
            f"could not be paused again ({type(cause).__name__}: {cause}); its schedule may "
            f"start runs now. Pause it at once: {commands}"
        )


@dataclass
class DeployReport:
    output: str
    restored: list[str] = field(default_factory=list)


def deployment_names(project_dir: Path) -> list[str]:
    """The name, `flow/deployment`, of each deployment prefect.yaml declares (the flow name
    read from its entrypoint, as `prefect deploy` reads it)."""
    from prefect.flows import load_flow_from_entrypoint

    prefect_yaml = project_dir / "prefect.yaml"
    document = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    names = []
    for item in document.get("deployments", []):
        path, _, function = item["entrypoint"].rpartition(":")
        flow: Any = load_flow_from_entrypoint(f"{project_dir / path}:{function}")
        names.append(f"{flow.name}/{item['name']}")
    return names


def read_pause_states(client: Any, names: list[str]) -> list[SwitchState]:
    """The switch of each named deployment that exists, read by name (never from a page of
    every deployment, which a busy server truncates)."""
    from prefect.exceptions import ObjectNotFound

    states = []
    for name in names:
        try:
            states.append(read_switch(client, name))
        except ObjectNotFound:
            continue  # a first deploy: nothing was switched off
    return states


def restore_pauses(client: Any, before: list[SwitchState]) -> list[str]:
    """Switch off again what was off: the deployment paused, the same schedules (by slug, else
    by id) inactive. The names restored."""
    restored = []
    for state in before:
        current = read_switch(client, state.name)
        if state.deployment_paused and not current.deployment_paused:
            client.pause_deployment(current.deployment_id)
        inactive = [s for s in state.schedules if not s.active]
        for schedule in current.schedules:
            was_off = any(
                (old.slug is not None and old.slug == schedule.slug) or old.id == schedule.id
                for old in inactive
            )
            if was_off and schedule.active:
                client.update_deployment_schedule(current.deployment_id, schedule.id, active=False)
        restored.append(state.name)
    return restored


def ensure_work_pool(client: Any, name: str = "rollout-pool") -> bool:
    """Create the process work pool when it is missing; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_work_pool(name)
        return False
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        return True


def prefect_executable() -> str:
    """The `prefect` of this environment (beside its python), else the one on PATH."""
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def deploy_all(project_dir: Path, work_pool: str = "rollout-pool") -> DeployReport:
    """Run `prefect --no-prompt deploy --all` in project_dir and restore every recorded pause,
    whatever happens to the deploy; KillSwitchOff when a restore fails."""
    names = deployment_names(project_dir)
    with _signals_raise():
        with prefect_api() as client:
            ensure_work_pool(client, work_pool)
            before = [s for s in read_pause_states(client, names) if s.is_switched_off]
        return _deploy_and_restore(project_dir, before)


def _deploy_and_restore(project_dir: Path, before: list[SwitchState]) -> DeployReport:
    restored: list[str] = []
    try:
        completed = subprocess.run(
            [prefect_executable(), "--no-prompt", "deploy", "--all"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **api_env()},
        )
    finally:  # re-apply even when the deploy failed half-way or was interrupted
        _ignore_signals()  # a second SIGTERM must not cut the restore short
        if before:
            try:
                with prefect_api() as client:
                    restored = restore_pauses(client, before)
            except BaseException as error:
                raise KillSwitchOff([s.name for s in before], error) from error
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed (exit {completed.returncode}):\n{output}")
    return DeployReport(output, restored)


_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP (a cancelled CI job, `timeout`, systemd, a closed ssh session) raise
    SystemExit(128 + signal) instead of killing the process, so the `finally` that restores
    the pauses runs; the previous handlers come back afterwards. Main thread only (Python
    allows handlers nowhere else); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _SIGNALS}

    def terminate(number: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + number)

    for number in _SIGNALS:
        signal.signal(number, terminate)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _ignore_signals() -> None:
    """While the pauses are restored, SIGTERM and SIGHUP wait (ignored): the restore is a
    few requests of at most PREFECT_API_TIMEOUT_SEC each."""
    if threading.current_thread() is threading.main_thread():
        for number in _SIGNALS:
            signal.signal(number, signal.SIG_IGN)
