"""The manual override: the Prefect UI's Run button sets a percent, audited as by="manual".

`rewrite=true` writes and audits even at the percent Redis holds (the UI's `rollout set
--rewrite`): the newer write ends a lost-write hold (the `history` guard) after a failover.

Whatever is wrong (a feature that is not initialised, a bad percent, an empty reason, bad
settings, Redis down) ends the run Failed with a message that says so, and writes nothing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed, State
from pydantic import Strict

from rollout_core.audit import log_audited_write
from rollout_core.bootstrap import Settings, current_adapters
from rollout_core.config import validate_feature_name
from rollout_core.errors import ConfigError, FlagStoreError, RolloutError
from rollout_core.model import FlagState
from rollout_core.ports import FlagStore

__all__ = ["require_initialised", "rollout_override"]


# strict: a JSON `true` (`-p percent=true`) or a string is refused, never read as 1% or parsed
Percent = Annotated[float, Strict()]


# strict too: a JSON string "false" must not read as true
Rewrite = Annotated[bool, Strict()]


@flow(name="rollout-override")
def rollout_override(
    feature: str, percent: Percent, reason: str, rewrite: Rewrite = False
) -> State[Any]:
    """Set `feature` to `percent` through the controller's compare-and-set, audited, with its
    line in the Markdown log (ROLLOUT_AUDIT_LOG) like every other audited write. `rewrite`:
    write even at the percent it holds (ends a lost-write hold), as `rollout set --rewrite`."""
    logger = get_run_logger()
    try:
        message, ok = _override(feature, percent, reason, rewrite)
    except ConfigError as error:
        message, ok = f"{feature}: not changed: {error}", False
    except FlagStoreError as error:
        message, ok = f"{feature}: not changed: Redis failed: {error}", False
    (logger.info if ok else logger.error)(message)
    return Completed(message=message) if ok else Failed(message=message)


def _override(feature: str, percent: float, reason: str, rewrite: bool = False) -> tuple[str, bool]:
    validate_feature_name(feature)
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ConfigError(f"percent {percent!r} is not a number; expected a number 0..100")
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ConfigError(f"percent {percent:g} is out of range; expected 0..100")
    if not reason.strip():
        raise ConfigError("reason is empty; say why the percent changes (it goes to the audit)")
    settings = Settings.from_env()
    store = current_adapters(settings).store
    before = require_initialised(store, feature)
    at = datetime.now(UTC)
    result = store.set_percent(feature, percent, reason, by="manual", at=at, rewrite=rewrite)
    if result.unknown:  # the reply was lost and Redis stays unreachable: it may be written
        return f"{feature}: not confirmed: {result.message}", False
    if result.conflict:
        return (
            f"{feature}: not changed; the flag moved to {result.current_percent}% while this "
            "run read it. Run again if the change is still wanted.",
            False,
        )
    if result.applied:
        # read back after a lost reply, or "applied, unconfirmed: no replica acknowledged ..."
        note = f"; {result.message}" if result.recovered or result.unconfirmed else ""
        # a rewrite at the percent it held: a newer write, same percent (the CLI's wording)
        change = "rewrote" if before.percent == percent else "set to"
        done = f"{feature}: {change} {percent:g}% (audit {result.audit_id}){note}"
        if result.unconfirmed:
            get_run_logger().warning("durability: %s", result.message)
        return done + _log_line(store, result.audit_id, settings.audit_log_path), True
    return (
        f"{feature}: already at {percent:g}%, nothing written (rewrite=true writes it again, "
        "e.g. to end a lost-write hold)",
        True,
    )


def _log_line(store: FlagStore, audit_id: str | None, path: str | None) -> str:
    """Append the write's Markdown log line; a warning for the run's message when that fails
    (the stream entry is the durable record: the change stands)."""
    client = getattr(store, "client", None)
    if client is None or audit_id is None:
        return ""
    try:
        log_audited_write(client, audit_id, path)
    except (OSError, RolloutError) as error:
        return (
            f"\nwarning: the Markdown log {path} was not updated ({error}); the change is in "
            f"rollout:audit, and `rollout audit --rebuild-log {path}` rewrites the log from it"
        )
    return ""


def require_initialised(store: FlagStore, feature: str) -> FlagState:
    """The feature's state; ConfigError naming the feature and the initialised ones when it
    has no rollout_percent key: a mistyped name must not create stray keys and report success."""
    state = store.read_each([feature]).get(feature)
    if isinstance(state, FlagState) and state.exists:
        return state
    if isinstance(state, Exception):  # the keys exist but do not parse: that error, as is
        raise state
    listing = getattr(store, "known_features", None)
    known = listing() if callable(listing) else []
    raise ConfigError(
        f"feature {feature!r} is not initialised; known: {', '.join(known) or 'none'}; "
        f"run `rollout init {feature}` if it is new"
    )
