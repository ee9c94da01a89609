"""The manual override: the Prefect UI's Run button sets a percent, audited as by="manual"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

from rollout_core.bootstrap import current_adapters
from rollout_core.config import validate_feature_name
from rollout_core.errors import ConfigError

__all__ = ["rollout_override"]


@flow(name="rollout-override")
def rollout_override(feature: str, percent: float, reason: str) -> State[Any]:
    """Set `feature` to `percent` through the controller's compare-and-set, audited."""
    validate_feature_name(feature)
    if not 0 <= percent <= 100:
        raise ConfigError(f"percent {percent!r} is out of range; expected 0..100")
    if not reason.strip():
        raise ConfigError("reason is empty; say why the percent changes (it goes to the audit)")
    store = current_adapters().store
    result = store.set_percent(feature, percent, reason, by="manual", at=datetime.now(UTC))
    logger = get_run_logger()
    if result.conflict:
        message = (
            f"{feature}: not changed; the flag moved to {result.current_percent}% while this "
            "run read it. Run again if the change is still wanted."
        )
        logger.error(message)
        return Failed(message=message)
    message = (
        f"{feature}: set to {percent:g}% (audit {result.audit_id})"
        if result.applied
        else f"{feature}: already at {percent:g}%, nothing written"
    )
    logger.info(message)
    return Completed(message=message)
