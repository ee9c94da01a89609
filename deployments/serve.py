"""`rollout serve`: both deployments from one process, no work pool, for a single machine.

On SIGTERM Prefect pauses the served deployments (pause_on_shutdown), so a stopped server
does not leave a schedule piling up late runs.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

__all__ = ["serve_all"]


def serve_all(
    dry_run: bool = True, interval_seconds: int = 600, config_path: str = "rollouts.yaml"
) -> None:
    """Serve rollout-controller/every-10-minutes and rollout-override/manual until stopped."""
    from prefect import serve

    from flows.controller import rollout_controller
    from flows.override import rollout_override

    controller = rollout_controller.to_deployment(
        name="every-10-minutes",
        interval=interval_seconds,
        parameters={"dry_run": dry_run, "config_path": config_path},
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
        tags=["rollout"],
    )
    override = rollout_override.to_deployment(name="manual", tags=["rollout"])
    serve(controller, override)
