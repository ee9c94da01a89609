"""`rollout deploy`: `prefect deploy --all`, keeping a paused controller paused.

Prefect 3.9's `prefect deploy` sets a paused deployment back to unpaused. An operator who
paused the controller (the kill switch) must not find it running again after a routine
redeploy, so this records every pause before deploying and re-applies it afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

__all__ = [
    "DeployReport",
    "PauseState",
    "deploy_all",
    "ensure_work_pool",
    "prefect_executable",
    "read_pause_states",
]


@dataclass(frozen=True)
class PauseState:
    """What an operator had switched off on one deployment."""

    name: str  # "flow/deployment"
    deployment_id: UUID
    paused: bool
    inactive_schedule_ids: tuple[UUID, ...] = ()

    @property
    def is_switched_off(self) -> bool:
        return self.paused or bool(self.inactive_schedule_ids)


@dataclass
class DeployReport:
    output: str
    restored: list[str] = field(default_factory=list)


def _yaml_entrypoints(prefect_yaml: Path) -> dict[str, str]:
    """Deployment name -> entrypoint, as prefect.yaml declares them."""
    document = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    return {d["name"]: d["entrypoint"] for d in document.get("deployments", [])}


def read_pause_states(client: Any, prefect_yaml: Path) -> list[PauseState]:
    """The pause state of every existing deployment that prefect.yaml declares."""
    wanted = _yaml_entrypoints(prefect_yaml)
    states = []
    for deployment in client.read_deployments():
        if wanted.get(deployment.name) != deployment.entrypoint:
            continue
        flow = client.read_flow(deployment.flow_id)
        inactive = tuple(s.id for s in deployment.schedules or () if not s.active)
        states.append(
            PauseState(f"{flow.name}/{deployment.name}", deployment.id, deployment.paused, inactive)
        )
    return states


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
    """Run `prefect --no-prompt deploy --all` in project_dir and restore every recorded pause."""
    from prefect.client.orchestration import get_client

    prefect_yaml = project_dir / "prefect.yaml"
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, work_pool)
        before = [s for s in read_pause_states(client, prefect_yaml) if s.is_switched_off]
    completed = subprocess.run(
        [prefect_executable(), "--no-prompt", "deploy", "--all"],
        cwd=project_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    restored: list[str] = []
    with get_client(sync_client=True) as client:
        for state in before:  # re-apply even when the deploy failed half-way
            if state.paused:
                client.pause_deployment(state.deployment_id)
            for schedule_id in state.inactive_schedule_ids:
                client.update_deployment_schedule(state.deployment_id, schedule_id, active=False)
            restored.append(state.name)
    if completed.returncode != 0:
        raise RuntimeError(f"prefect deploy --all failed (exit {completed.returncode}):\n{output}")
    return DeployReport(output, restored)
