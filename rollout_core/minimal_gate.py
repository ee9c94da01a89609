"""MinimalGate: the RolloutGate over the operator's Redis flag keys, cached per feature.

Checked in this order: the env hard kill `PROVIDER_<FEATURE>_ENABLED=false`; `flags:<f>:enabled`
(absent means enabled); the audience (`internal_only`); then anonymous traffic only at 100%,
everyone else by sticky bucket. Redis and the environment are read at most once per feature per
TTL (one MGET) by one thread under a lock; the cached path takes no lock and makes no call.
Bad values fail closed and are logged once each. Give it a client with
short timeouts and no retries (`socket_timeout=0.1, retry=None`): redis-py's default retry
holds the refreshing request about 4 s while Redis is down.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rollout_core.bucketing import BUCKETS, percent_threshold
from rollout_core.config import FEATURE_NAME_PATTERN
from rollout_core.errors import InvalidFlagValue
from rollout_core.model import FlagState

__all__ = ["MgetClient", "MinimalGate", "env_token", "parse_gate_flags"]

log = logging.getLogger(__name__)
_sha256: Callable[[bytes], Any]
try:
    # CPython's own SHA-256 (the same digest) skips OpenSSL's per-call context set-up: about
    # 85 ns of the gate's 1,000 ns budget. _sha2 from Python 3.12, _sha256 before.
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
except ImportError:  # pragma: no cover - other Pythons
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _sha256 = hashlib.sha256
_first_8_bytes = struct.Struct(">Q").unpack_from
_KILL_VALUES = frozenset({"false", "0", "no", "off"})
_NEVER = math.inf


class MgetClient(Protocol):
    """The one Redis call the gate makes (redis-py, RESP2 or RESP3, bytes or str replies)."""

    def mget(self, keys: list[str], *args: Any) -> Any: ...


def env_token(feature: str) -> str:
    """`gmail.send` -> `GMAIL_SEND`: the feature as environment variable names spell it."""
    return re.sub(r"[^A-Z0-9]", "_", feature.upper())


def parse_gate_flags(
    feature: str, enabled: object, internal_only: object, percent: object, env_percent: str | None
) -> tuple[FlagState, tuple[InvalidFlagValue, ...]]:
    """The state the gate applies, failing closed on each bad value (a bad `enabled` disables,
    a bad `internal_only` keeps the audience internal, a bad percent is 0), and the problems."""
    problems: list[InvalidFlagValue] = []
    is_enabled = _parse_bool(_text(enabled), absent=True)
    if is_enabled is None:
        problems.append(_bad_bool(f"flags:{feature}:enabled", enabled))
        is_enabled = False
    is_internal_only = _parse_bool(_text(internal_only), absent=False)
    if is_internal_only is None:
        problems.append(_bad_bool(f"flags:{feature}:internal_only", internal_only))
        is_internal_only = True
    text, source = _text(percent), f"flags:{feature}:rollout_percent"
    if text is None:
        text, source = env_percent, f"FLAGS_{env_token(feature)}_ROLLOUT_PERCENT"
    share = 0.0 if text is None else _parse_percent(text)
    if share is None:
        problems.append(InvalidFlagValue(source, text or "", "a number in 0..100"))
        share = 0.0
    state = FlagState(feature, share, is_enabled, is_internal_only, exists=percent is not None)
    return state, tuple(problems)


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _parse_bool(text: str | None, absent: bool) -> bool | None:
    """Exactly `true`/`false`, as rollout_core.flags reads them; `absent` when the key is
    missing; None when unparsable."""
    if text is None:
        return absent
    return {"true": True, "false": False}.get(text)


def _bad_bool(key: str, raw: object) -> InvalidFlagValue:
    return InvalidFlagValue(key, _text(raw) or "", '"true" or "false"')


def _parse_percent(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 100 else None


class _Entry:
    """One feature's cached answer inputs, replaced whole (never mutated) on refresh.

    An off feature is encoded as internal-only with nobody bucketed in, so the hot path needs
    no check of its own for it.
    """

    __slots__ = (
        "fixed_answer",
        "fresh_until",
        "internal_only",
        "percent",
        "prefix",
        "stale_until",
        "state",
        "threshold",
    )

    def __init__(
        self,
        feature: object,
        state: FlagState | None,
        is_killed: bool,
        fresh_until: float,
        stale_until: float,
    ) -> None:
        is_off = is_killed or state is None or not state.enabled
        self.state = state  # the last flags read from Redis; None when none are usable
        self.fresh_until = fresh_until  # refresh at this clock reading
        self.stale_until = stale_until  # the last good read plus max_stale_sec
        self.percent = 0.0 if is_off or state is None else state.percent
        self.threshold = percent_threshold(self.percent)  # buckets below it are in
        self.internal_only = is_off or state is None or state.internal_only
        # the answer for every eligible actor when the bucket does not matter (0% or 100%)
        self.fixed_answer: bool | None = None
        if is_off or self.threshold == 0:
            self.fixed_answer = False
        elif self.percent >= 100:
            self.fixed_answer = True
        self.prefix = f"{feature}:"


class MinimalGate:
    """The RolloutGate: sticky, cached, fail-closed, and never raising into the caller."""

    def __init__(
        self,
        redis_client: MgetClient,
        cache_ttl_sec: float = 5,
        max_stale_sec: float = 60,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not (cache_ttl_sec >= 0 and max_stale_sec >= 0):
            raise ValueError(
                f"cache_ttl_sec={cache_ttl_sec!r}, max_stale_sec={max_stale_sec!r}: "
                "both must be seconds >= 0"
            )
        self._redis = redis_client
        self._ttl = float(cache_ttl_sec)
        self._max_stale = float(max_stale_sec)
        self._clock = clock
        self._environ = environ
        self._entries: dict[object, _Entry] = {}
        self._refresh_lock = threading.Lock()
        self._is_redis_down = False
        self._logged: set[str] = set()

    def allow(self, feature: str, context: Mapping[str, object]) -> bool:
        """Whether this request's actor sees the feature (see the module docstring)."""
        try:
            entry = self._entries.get(feature)
            if entry is None or self._clock() >= entry.fresh_until:
                entry = self._refreshed(feature, entry)
            get = context.get
            if get("internal") is True:
                if not entry.internal_only:
                    return True  # internal actors stay on once the audience is public
            elif entry.internal_only:
                return False
            if entry.fixed_answer is not None:
                return entry.fixed_answer  # 0%, 100% (anonymous included) or off
            actor = get("actor_id")
            if actor is None:
                actor = get("user_id")
            if actor is None or actor == "":
                return False  # anonymous traffic is never bucketed together
            workspace = get("workspace_id")
            if workspace is None or workspace == "":
                unit = f"{entry.prefix}{actor}"
            else:
                unit = f"{entry.prefix}{workspace}:{actor}"
            # bucketing.bucket inlined: the call alone would cost a tenth of the budget
            position: int = _first_8_bytes(_sha256(unit.encode()).digest())[0] % BUCKETS
            return position < entry.threshold
        except Exception as exc:  # a bad context or feature must not break the request
            self._log_once(f"gate error {type(exc).__name__}", "gate answered False after %r", exc)
            return False

    def percent(self, feature: str) -> float:
        """The percent of bucketed actors let in now: 0 when killed, disabled or unknown."""
        try:
            entry = self._entries.get(feature)
            if entry is None or self._clock() >= entry.fresh_until:
                entry = self._refreshed(feature, entry)
            return entry.percent
        except Exception as exc:
            self._log_once(f"gate error {type(exc).__name__}", "gate answered 0%% after %r", exc)
            return 0.0

    def _refreshed(self, feature: object, seen: _Entry | None) -> _Entry:
        """A fresh entry; while another thread refreshes, the one we have (within staleness)."""
        if seen is not None and not self._refresh_lock.acquire(blocking=False):
            return seen if self._clock() < seen.stale_until else _Entry(feature, None, True, 0, 0)
        if seen is None:
            self._refresh_lock.acquire()
        try:
            current = self._entries.get(feature)
            now = self._clock()
            if current is not None and now < current.fresh_until:
                return current  # refreshed by another thread while we waited
            entry = self._load(feature, current, now)
            self._entries[feature] = entry
            return entry
        finally:
            self._refresh_lock.release()

    def _load(self, feature: object, previous: _Entry | None, now: float) -> _Entry:
        if not isinstance(feature, str) or not FEATURE_NAME_PATTERN.fullmatch(feature):
            self._log_once(
                f"name {feature!r}", "feature name %r is invalid; gate says False", feature
            )
            return _Entry(feature, None, True, _NEVER, _NEVER)
        token = env_token(feature)
        is_killed = (
            self._environ.get(f"PROVIDER_{token}_ENABLED", "").strip().lower() in _KILL_VALUES
        )
        keys = [
            f"flags:{feature}:{name}" for name in ("enabled", "internal_only", "rollout_percent")
        ]
        try:
            enabled, internal_only, percent = self._redis.mget(keys)
        except Exception as exc:
            return self._stale(feature, previous, is_killed, now, exc)
        if self._is_redis_down:
            self._is_redis_down = False
            log.warning("Redis is reachable again; flags are read afresh")
        env_percent = self._environ.get(f"FLAGS_{token}_ROLLOUT_PERCENT")
        state, problems = parse_gate_flags(feature, enabled, internal_only, percent, env_percent)
        for problem in problems:
            self._log_once(str(problem), "%s; the gate fails closed until it is fixed", problem)
        return _Entry(feature, state, is_killed, now + self._ttl, now + self._max_stale)

    def _stale(
        self, feature: str, previous: _Entry | None, is_killed: bool, now: float, exc: Exception
    ) -> _Entry:
        """Redis failed: keep the last known flags up to max_stale_sec after the last good read."""
        if not self._is_redis_down:
            self._is_redis_down = True
            log.warning(
                "Redis unreachable (%r); serving the last known flags for up to %gs, then False",
                exc,
                self._max_stale,
            )
        if previous is not None and previous.state is not None and now < previous.stale_until:
            fresh_until = min(now + self._ttl, previous.stale_until)
            return _Entry(feature, previous.state, is_killed, fresh_until, previous.stale_until)
        if previous is not None and previous.state is not None:
            log.warning(
                "feature %s: flags older than %gs; answering False", feature, self._max_stale
            )
        return _Entry(feature, None, is_killed, now + self._ttl, now)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)
