"""The manual override: the Prefect UI's Run button sets a percent, audited as by="manual".

Whatever is wrong (a feature that is not initialised, a bad percent, an empty reason, bad
settings, Redis down) ends the run Failed with a message that says so, and writes nothing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State

from rollout_core.bootstrap import Settings, current_adapters
from rollout_core.config import validate_feature_name
from rollout_core.errors import ConfigError, FlagStoreError
from rollout_core.model import FlagState
from rollout_core.ports import FlagStore

__all__ = ["require_initialised", "rollout_override"]


@flow(name="rollout-override")
def rollout_override(feature: str, percent: float, reason: str) -> State[Any]:
    """Set `feature` to `percent` through the controller's compare-and-set, audited."""
    logger = get_run_logger()
    try:
        message, ok = _override(feature, percent, reason)
    except ConfigError as error:
        message, ok = f"{feature}: not changed: {error}", False
    except FlagStoreError as error:
        message, ok = f"{feature}: not changed: Redis failed: {error}", False
    (logger.info if ok else logger.error)(message)
    return Completed(message=message) if ok else Failed(message=message)


def _override(feature: str, percent: float, reason: str) -> tuple[str, bool]:
    validate_feature_name(feature)
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ConfigError(f"percent {percent:g} is out of range; expected 0..100")
    if not reason.strip():
        raise ConfigError("reason is empty; say why the percent changes (it goes to the audit)")
    store = current_adapters(Settings.from_env()).store
    require_initialised(store, feature)
    result = store.set_percent(feature, percent, reason, by="manual", at=datetime.now(UTC))
    if result.unknown:  # the reply was lost and Redis stays unreachable: it may be written
        return f"{feature}: not confirmed: {result.message}", False
    if result.conflict:
        return (
            f"{feature}: not changed; the flag moved to {result.current_percent}% while this "
            "run read it. Run again if the change is still wanted.",
            False,
        )
    if result.applied:
        recovered = f"; {result.message}" if result.recovered else ""
        return f"{feature}: set to {percent:g}% (audit {result.audit_id}){recovered}", True
    return f"{feature}: already at {percent:g}%, nothing written", True


def require_initialised(store: FlagStore, feature: str) -> None:
    """ConfigError naming the feature and the initialised ones when `feature` has no
    rollout_percent key: a mistyped name must not create stray keys and report success."""
    state = store.read_each([feature]).get(feature)
    if isinstance(state, FlagState) and state.exists:
        return
    if isinstance(state, Exception):  # the keys exist but do not parse: that error, as is
        raise state
    listing = getattr(store, "known_features", None)
    known = listing() if callable(listing) else []
    raise ConfigError(
        f"feature {feature!r} is not initialised; known: {', '.join(known) or 'none'}; "
        f"run `rollout init {feature}` if it is new"
    )
