"""RolloutClient: the gate a service asks on every request, refreshed in the background.

The request path (`allow`, `percent`, `evaluate`) reads an in-memory snapshot: no network, no
lock, never raises. One refresher thread per client reads every known feature in one round
trip per `refresh_interval`, and at once when a change notice arrives on
`rollout_sdk.keys.CHANGES_CHANNEL` (a listener thread) or a request names a new feature.
State older than `max_stale` (measured from before the read that fetched it) fails closed.
After `fork()` the child starts its own threads. Rules and reasons: docs/sdk.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rollout_sdk.bucketing import BUCKETS
from rollout_sdk.keys import (
    CHANGES_CHANNEL,
    FEATURE_NAME_PATTERN,
    FEATURES_REGISTRY,
    GATE_FIELDS,
    SEGMENT_BY_FIELD,
    SEGMENT_FALLBACK_FIELD,
    SEGMENTS_FIELD,
    flag_key,
    overrides_key,
    segment_key,
)
from rollout_sdk.sentinel import is_sentinel_url, master_client
from rollout_sdk.state import (
    DEFAULT,
    DISABLED,
    ERROR,
    SPLIT,
    STALE,
    TARGETING_MATCH,
    FeatureState,
    RawFlags,
    feature_state,
    parse_segment_list,
    placeholder_state,
)

__all__ = [
    "ERROR_HEALTH",
    "READY",
    "STALE_HEALTH",
    "ClientStatus",
    "Evaluation",
    "FeatureStatus",
    "RolloutClient",
]

log = logging.getLogger("rollout_sdk")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
SOCKET_TIMEOUT_SEC = 1.0  # only the background threads wait on it, never a request
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
_REFRESH_ALL = "\0all"  # a wake-up that asks for a full refresh (after a resubscription)
_STOP = "\0stop"
_MAX_BACKOFF_SEC = 5.0
_SEGMENT_DISCOVERY = (SEGMENT_BY_FIELD, SEGMENTS_FIELD, SEGMENT_FALLBACK_FIELD)
_LISTEN_RETRY_SEC = 1.0  # between attempts to resubscribe; polling covers the gap
_LISTEN_PING_SEC = 1.0  # the subscription is PINGed this often...
_LISTEN_DEAD_AFTER_SEC = 3.0  # ...and dropped for a new one when nothing came back this long


class Evaluation(NamedTuple):
    """An answer with its reason (docs/sdk.md), the percent served and any error message."""

    value: bool
    reason: str
    percent: float
    error: str | None = None


# the client's health as the OpenFeature provider reports it
READY, STALE_HEALTH, ERROR_HEALTH = "ready", "stale", "error"


@dataclass(frozen=True)
class FeatureStatus:
    """How old a feature's state is (None: never read) and what this process serves."""

    age: float | None
    percent: float
    stale: bool


@dataclass(frozen=True)
class ClientStatus:
    """What an operator monitors: readiness, refresh errors, each feature's age."""

    ready: bool
    refresh_errors: int
    last_error: str | None
    seconds_since_refresh: float | None
    features: Mapping[str, FeatureStatus] = field(default_factory=dict)

    @property
    def stale_features(self) -> list[str]:
        return sorted(name for name, feature in self.features.items() if feature.stale)


class RolloutClient:
    """Sticky, fail-closed feature gate for a service; see the module docstring."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        client: redis.Redis | None = None,
        refresh_interval: float = 5.0,
        max_stale: float = 60.0,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
        subscribe: bool = True,
    ) -> None:
        _check_timing(refresh_interval, max_stale)
        self._owns_redis = client is None
        self._redis: redis.Redis = client if client is not None else _connect(redis_url)
        self._interval = float(refresh_interval)
        self._max_stale = float(max_stale)
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._clock = clock
        self._subscribe = subscribe
        self._states: dict[str, FeatureState] = {}
        self._first_seen_names: set[str] = set()  # tracked because a request named them
        self._own_pool: redis.ConnectionPool | None = None  # the subscription's, see _subscriber
        # each segmented feature's segments as last read: their percents join the next read
        self._segment_lists: dict[str, tuple[str, ...]] = {}
        self._logged: set[object] = set()
        self._ready = threading.Event()
        self._refresh_errors = 0
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._is_redis_down = False
        self._health: str | None = None
        self._listeners: list[Callable[[str, str | None], None]] = []
        self._started = False
        self._closed = False
        self._wake: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        _CLIENTS.add(self)
        if start:
            self.start()

    # the request path: an in-memory snapshot only

    def allow(self, feature: str, context: Mapping[str, object]) -> bool:
        """Whether this request's actor sees the feature. Never raises, never waits."""
        try:
            state = self._states.get(feature)
            if state is None:
                state = self._first_seen(feature)
            if self._clock() >= state.stale_until:
                return self._expired(state)
            get = context.get
            if state.overrides is not None:
                actor = get("actor_id")
                on = state.override_for(
                    get("user_id") if actor is None else actor, get("workspace_id")
                )
                if on is not None:
                    return on
            if get("internal") is True:
                if not state.internal_only:
                    return True  # internal actors stay on once the audience is public
            elif state.internal_only:
                return False
            if state.fixed_answer is not None:
                return state.fixed_answer  # 0%, 100% (anonymous included) or off
            threshold = state.threshold
            if state.segment_by is not None:  # the context's region (tier) picks the percent
                attribute = state.segment_attribute
                if attribute is not None:
                    threshold = state.segment_thresholds.get(get(attribute), threshold)
                else:
                    threshold = state.segment_threshold(get)
                if threshold == 0 or threshold >= BUCKETS:
                    return threshold > 0
            actor = get("actor_id")
            if actor is None:
                actor = get("user_id")
            if actor is None or actor == "":
                return False  # anonymous traffic is never bucketed together
            workspace = get("workspace_id")
            if workspace is None or workspace == "":
                unit = f"{state.prefix}{actor}"
            else:
                unit = f"{state.prefix}{workspace}:{actor}"
            # bucketing.bucket inlined: the call alone would cost a tenth of the budget
            position: int = _first_8_bytes(_sha256(unit.encode()).digest())[0] % BUCKETS
            return position < threshold
        except Exception as exc:  # a bad context or feature must not break the request
            self._log_once(("error", type(exc)), "rollout client answered False after %r", exc)
            return False

    def percent(self, feature: str) -> float:
        """The percent of bucketed actors let in now: 0 when killed, disabled, unknown, stale."""
        try:
            state = self._states.get(feature)
            if state is None:
                state = self._first_seen(feature)
            if self._clock() >= state.stale_until:
                self._expired(state)
                return 0.0
            return state.percent
        except Exception as exc:
            self._log_once(("error", type(exc)), "rollout client answered 0%% after %r", exc)
            return 0.0

    def evaluate(self, feature: str, context: Mapping[str, object]) -> Evaluation:
        """`allow` with its reason, for the OpenFeature provider and for debugging."""
        try:
            get = context.get
            actor = get("actor_id")
            if actor is None:
                actor = get("user_id")
            internal = get("internal") is True
            state = self._states.get(feature)
            if state is not None and state.segment_by is not None:
                return self._evaluate(state, actor, get("workspace_id"), internal, get)
            _, evaluation = self.evaluate_unit(feature, actor, get("workspace_id"), internal)
            return evaluation
        except Exception as exc:
            self._log_once(("error", type(exc)), "rollout client answered False after %r", exc)
            return Evaluation(False, ERROR, 0.0, f"{type(exc).__name__}: {exc}")

    def evaluate_unit(
        self, feature: str, actor: object, workspace: object, internal: bool
    ) -> tuple[FeatureState | None, Evaluation]:
        """`evaluate` from the context's parts, and the state it was decided on (None after
        an error), so a caller may reuse what it derived from that state until it changes."""
        try:
            state = self._states.get(feature)
            if state is None:
                state = self._first_seen(feature)
            return state, self._evaluate(state, actor, workspace, internal)
        except Exception as exc:
            self._log_once(("error", type(exc)), "rollout client answered False after %r", exc)
            return None, Evaluation(False, ERROR, 0.0, f"{type(exc).__name__}: {exc}")

    def _evaluate(
        self,
        state: FeatureState,
        actor: object,
        workspace: object,
        internal: bool,
        get: Callable[[str], object] | None = None,
    ) -> Evaluation:
        """`allow`'s rules spelled out with their reasons (allow inlines them for speed; a
        property test holds the two together)."""
        now = self._clock()
        if now >= state.stale_until:
            self._expired(state)
            age = now - state.read_at
            return Evaluation(
                False, STALE, 0.0, f"state is {age:.0f} s old (max {self._max_stale:g} s)"
            )
        if not state.loaded:
            return Evaluation(False, ERROR, 0.0, f"{state.feature} is not loaded yet")
        problem = state.problems[0] if state.problems else None
        if state.killed:
            return Evaluation(False, DISABLED, 0.0, problem)
        if not state.enabled:
            return Evaluation(False, ERROR if problem else DISABLED, 0.0, problem)
        percent, threshold, fixed = state.percent, state.threshold, state.fixed_answer
        if state.segment_by is not None:  # the context's segment, else the fallback
            percent = state.segment_percent(get or (lambda _: None))
            threshold = state.segment_threshold(get or (lambda _: None))
            fixed = False if threshold == 0 else True if threshold >= BUCKETS else None
        if state.overrides is not None:
            on = state.override_for(actor, workspace)
            if on is not None:
                return Evaluation(on, TARGETING_MATCH, percent, problem)
        if internal:
            if not state.internal_only:
                return Evaluation(True, TARGETING_MATCH, percent, problem)  # insiders stay on
        elif state.internal_only:
            return Evaluation(False, ERROR if problem else TARGETING_MATCH, percent, problem)
        if fixed is not None:
            value = fixed
        elif actor is None or actor == "":
            value = False  # anonymous traffic is never bucketed together
        else:
            unit = f"{actor}" if workspace is None or workspace == "" else f"{workspace}:{actor}"
            digest = _sha256(f"{state.prefix}{unit}".encode()).digest()
            position: int = _first_8_bytes(digest)[0] % BUCKETS
            value = position < threshold
        if problem is not None and not value:
            return Evaluation(False, ERROR, percent, problem)
        if not state.exists and problem is None and percent == 0:
            return Evaluation(value, DEFAULT, percent, None)  # never initialised: off
        return Evaluation(value, SPLIT, percent, problem)

    def _first_seen(self, feature: object) -> FeatureState:
        """A feature not read yet: off at once, fetched by the refresher. At most
        MAX_UNKNOWN_FEATURES names outside the registry are tracked (a name built from request
        data must not grow every refresh); beyond that they answer False untracked."""
        if not isinstance(feature, str) or not FEATURE_NAME_PATTERN.fullmatch(feature):
            self._log_once(
                ("name",),
                "feature name %r is invalid; answering False (further invalid names are "
                "answered False without a log line)",
                feature,
            )
            return placeholder_state(str(feature))
        if len(self._first_seen_names) >= MAX_UNKNOWN_FEATURES:
            self._log_once(
                ("unknown",),
                "%d feature names outside %s were asked for; %r and any further one answer "
                "False without being read (initialise them with `rollout init`)",
                MAX_UNKNOWN_FEATURES,
                FEATURES_REGISTRY,
                feature,
            )
            return placeholder_state(feature)
        self._first_seen_names.add(feature)
        state = self._states.setdefault(feature, placeholder_state(feature))
        if not state.loaded:
            self._wake.put(feature)
        return state

    def _expired(self, state: FeatureState) -> bool:
        self._log_once(
            ("stale", state.feature, state.read_at),
            "feature %s: state older than max_stale %gs (Redis unreachable?); answering False",
            state.feature,
            self._max_stale,
        )
        return False

    # life cycle

    def start(self) -> RolloutClient:
        """Start the refresher (and the change listener); the constructor does it by default."""
        if self._closed:
            raise RuntimeError("this RolloutClient is closed; create a new one")
        if not self._started:
            self._started = True
            self._start_threads()
        return self

    def _start_threads(self) -> None:
        self._stop = threading.Event()
        self._wake = queue.SimpleQueue()
        targets: list[Callable[[threading.Event, queue.SimpleQueue[str]], None]] = [self._run]
        if self._subscribe:
            targets.append(self._listen)
        self._threads = [
            threading.Thread(
                target=target,
                args=(self._stop, self._wake),
                name=f"rollout-{target.__name__[1:]}",
                daemon=True,
            )
            for target in targets
        ]
        for thread in self._threads:
            thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block (once, at start-up) until the first full read succeeded; False on timeout."""
        return self._ready.wait(timeout)

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        """Stop the threads (and close the Redis client this client created)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        if self._owns_redis:
            self._redis.close()
        if self._own_pool is not None:
            self._own_pool.disconnect()

    def __enter__(self) -> RolloutClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        """The parent's threads do not exist here: start this process's own."""
        self._ready = _copied_event(self._ready)
        self._logged = set(self._logged)
        if self._started and not self._closed:
            self._start_threads()

    # the background: refresher and change listener

    def refresh(self, features: Iterable[str] | None = None) -> bool:
        """Read `features` (default: every known one and the registry) now, in one round trip;
        True when Redis answered. The refresher calls it; tests and scripts may too."""
        names = list(self._states) if features is None else list(dict.fromkeys(features))
        names = [name for name in names if FEATURE_NAME_PATTERN.fullmatch(name)]
        read_at = self._clock()
        try:
            states, registry = self._read(names, read_at, with_registry=features is None)
            new = sorted(registry - set(states) - set(self._states))
            self._first_seen_names -= registry  # initialised since: no longer counted
            if new:
                more, _ = self._read(new, self._clock(), with_registry=False)
                states.update(more)
        except Exception as exc:
            self._refresh_errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            last = self._last_success
            is_expired = last is None or self._clock() >= last + self._max_stale
            self._set_health(ERROR_HEALTH if is_expired else STALE_HEALTH, self._last_error)
            # a read still in flight when close() gave up waiting fails on the closed pool:
            # nothing to tell the service, which no longer uses this client
            if not self._is_redis_down and not self._closed:
                self._is_redis_down = True
                log.warning(
                    "Redis read failed (%r); serving the last known flags for up to %gs, "
                    "then False",
                    exc,
                    self._max_stale,
                )
            return False
        self._states.update(states)  # each state swapped whole: readers see old or new
        self._last_success = read_at
        if self._is_redis_down:
            self._is_redis_down = False
            log.warning("Redis answers again; flags are read afresh")
        if features is None:
            self._ready.set()
        if self._ready.is_set():
            self._set_health(READY, None)
        return True

    def add_listener(self, listener: Callable[[str, str | None], None]) -> None:
        """Call `listener(health, message)` from the refresher on each change of health:
        "ready" (read), "stale" (reads fail; the last state is served), "error" (reads fail
        and the state is older than max_stale, or none was ever read)."""
        self._listeners.append(listener)

    @property
    def health(self) -> str | None:
        """The last health reported to listeners (None before the first read attempt)."""
        return self._health

    def _set_health(self, health: str, message: str | None) -> None:
        if health == self._health:
            return
        self._health = health
        for listener in list(self._listeners):
            try:
                listener(health, message)
            except Exception as exc:
                self._log_once(("listener", type(exc)), "a health listener raised %r", exc)

    def _read(
        self, names: list[str], read_at: float, *, with_registry: bool
    ) -> tuple[dict[str, FeatureState], set[str]]:
        """One pipelined round trip: MGET of the string keys (a segmented feature's discovery
        keys and its segments' percents included), HGETALL of each overrides hash, and SMEMBERS
        of the registry. A feature whose segment list changed since the last read is read
        again at once with the new list (a second round trip only then)."""
        pipe = self._redis.pipeline(transaction=False)
        layouts = [self._segment_lists.get(name, ()) for name in names]
        if names:
            keys = []
            for name, segments in zip(names, layouts, strict=True):
                keys += [flag_key(name, f) for f in (*GATE_FIELDS, *_SEGMENT_DISCOVERY)]
                keys += [segment_key(name, s, "rollout_percent") for s in segments]
            pipe.mget(keys)
            for name in names:
                pipe.hgetall(overrides_key(name))
        if with_registry:
            pipe.smembers(FEATURES_REGISTRY)
        # a wrong-typed key fails only its own reply, never the whole read
        replies = pipe.execute(raise_on_error=False) if (names or with_registry) else []
        for reply in replies:
            if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
                raise reply  # Redis itself did not answer: the read failed
        registry: set[str] = set()
        if with_registry:
            members = replies.pop()
            if isinstance(members, Exception):
                self._log_once(
                    ("registry", type(members)),
                    "%s cannot be read as a set (%s); the known features are kept, new ones "
                    "load when first asked for; delete it and run `rollout init` per feature",
                    FEATURES_REGISTRY,
                    members,
                )
                members = ()
            for raw in members or ():
                name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                if FEATURE_NAME_PATTERN.fullmatch(name):
                    registry.add(name)
        states: dict[str, FeatureState] = {}
        changed: list[str] = []
        if names:
            values, hashes = replies[0], replies[1:]
            if isinstance(values, Exception):
                raise values
            start = 0
            for index, (name, segments) in enumerate(zip(names, layouts, strict=True)):
                width = len(GATE_FIELDS) + len(_SEGMENT_DISCOVERY) + len(segments)
                enabled, internal_only, percent, by, listed, fallback, *found = values[
                    start : start + width
                ]
                start += width
                if parse_segment_list(listed) != segments:
                    self._segment_lists[name] = parse_segment_list(listed)
                    changed.append(name)
                    continue
                raw = RawFlags(
                    enabled,
                    internal_only,
                    percent,
                    hashes[index] or {},
                    segment_by=by,
                    segments=listed,
                    segment_fallback=fallback,
                    segment_percents=dict(zip(segments, found, strict=True)),
                )
                state = feature_state(name, raw, self._environ, read_at, self._max_stale)
                for problem in state.problems:
                    self._log_once(("problem", problem), "%s", problem)
                states[name] = state
        if changed:
            again, _ = self._read(changed, read_at, with_registry=False)
            states.update(again)
        return states, registry

    def _run(self, stop: threading.Event, wake: queue.SimpleQueue[str]) -> None:
        """The refresher: a full read every interval, named features as soon as asked."""
        next_full, failures = 0.0, 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_full:
                failures = 0 if self.refresh() else failures + 1
                next_full = time.monotonic() + self._retry_delay(failures)
                continue
            try:
                names = {wake.get(timeout=next_full - now)}
            except queue.Empty:
                continue
            while True:  # one read for every notice that arrived meanwhile
                try:
                    names.add(wake.get_nowait())
                except queue.Empty:
                    break
            if _STOP in names or stop.is_set():
                return
            if _REFRESH_ALL in names:
                next_full = 0.0
            else:
                self.refresh(sorted(names))

    def _retry_delay(self, failures: int) -> float:
        """The interval; after failed reads it doubles, up to the interval or 5 s, whichever
        is longer, so thousands of clients do not hammer a Redis that is coming back."""
        if failures == 0:
            return self._interval
        doubled: float = self._interval * 2.0 ** min(failures, 10)
        return min(doubled, max(self._interval, _MAX_BACKOFF_SEC))

    def _listen(self, stop: threading.Event, wake: queue.SimpleQueue[str]) -> None:
        """The change listener: each notice names a feature to read at once."""
        while not stop.is_set():
            pubsub = None
            try:
                pubsub = self._subscriber()
                pubsub.subscribe(CHANGES_CHANNEL)
                last_heard = last_ping = time.monotonic()
                while not stop.is_set():
                    now = time.monotonic()
                    if now - last_heard > _LISTEN_DEAD_AFTER_SEC:
                        # a connection black-holed by a failover answers nothing, not even
                        # an error: resubscribe on a new one
                        raise redis.ConnectionError(
                            f"no answer to PING on {CHANGES_CHANNEL} for "
                            f"{_LISTEN_DEAD_AFTER_SEC:g}s"
                        )
                    if now - last_ping >= _LISTEN_PING_SEC:
                        pubsub.ping()
                        last_ping = now
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    last_heard = time.monotonic()
                    data = message.get("data")
                    if message.get("type") == "subscribe":
                        wake.put(_REFRESH_ALL)  # whatever changed while we were not listening
                    elif message.get("type") == "message":
                        wake.put(
                            data.decode("utf-8", "replace")
                            if isinstance(data, bytes)
                            else str(data)
                        )
            except Exception as exc:
                self._log_once(
                    ("listen", type(exc)),
                    "change notices unavailable (%r); changes arrive by polling every %gs",
                    exc,
                    self._interval,
                )
                stop.wait(_LISTEN_RETRY_SEC)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # a broken one is already gone
                        pubsub.close()

    def _subscriber(self) -> Any:
        """A PubSub on a pool of its own when the caller gave a client with a plain pool: a
        subscription holds its connection for good and must not take one of the caller's."""
        pool = self._redis.connection_pool
        if self._owns_redis or type(pool) is not redis.ConnectionPool:
            return self._redis.pubsub()  # type: ignore[no-untyped-call]
        if self._own_pool is None:
            kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "retry"}
            self._own_pool = redis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=4, **kwargs
            )
        return redis.client.PubSub(self._own_pool)

    # what an operator watches

    def status(self) -> ClientStatus:
        """Readiness, refresh errors and each feature's age and served percent."""
        now = self._clock()
        features = {}
        for name, state in list(self._states.items()):
            stale = now >= state.stale_until
            age = now - state.read_at if state.loaded else None
            features[name] = FeatureStatus(age, 0.0 if stale else state.percent, stale)
        since = None if self._last_success is None else now - self._last_success
        return ClientStatus(self.is_ready, self._refresh_errors, self._last_error, since, features)

    def _log_once(self, key: object, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)


MAX_UNKNOWN_FEATURES = 1_000  # names outside the registry a client tracks; then untracked
MAX_REFRESH_INTERVAL_SEC = 86_400.0  # a day; changes pushed on the channel arrive sooner


def _check_timing(refresh_interval: float, max_stale: float) -> None:
    """Refuse settings that would leave the client failing closed while Redis is healthy: an
    interval the refresher cannot wait on (inf, NaN, over a day), or a max_stale that expires
    each state before the next poll reads it again (0, or shorter than the interval)."""
    if isinstance(refresh_interval, bool) or not (0 < refresh_interval <= MAX_REFRESH_INTERVAL_SEC):
        raise ValueError(
            f"refresh_interval={refresh_interval!r} is not usable; expected seconds above 0 and "
            f"at most {MAX_REFRESH_INTERVAL_SEC:g} (a day), e.g. 5.0; changes pushed on "
            f"{CHANGES_CHANNEL} arrive without waiting for it"
        )
    if isinstance(max_stale, bool) or not (max_stale > 0 and max_stale >= refresh_interval):
        raise ValueError(
            f"max_stale={max_stale!r} with refresh_interval={refresh_interval!r}: each state "
            "would expire before the next poll reads it and the client would answer False "
            "while Redis is healthy; expected max_stale at least refresh_interval, better 12 "
            "times it (60.0 for 5.0), or math.inf to never fail closed on age"
        )


def _connect(url: str | None) -> redis.Redis:
    """A client that fails fast (one try, short timeouts): only the background waits on it."""
    url = url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    options: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_SEC,
        "socket_connect_timeout": SOCKET_TIMEOUT_SEC,
        "retry": Retry(NoBackoff(), 0),
    }
    if is_sentinel_url(url):  # redis+sentinel://host:port,host:port/service/db
        return master_client(url, **options)
    return redis.Redis.from_url(url, **options)


def _copied_event(event: threading.Event) -> threading.Event:
    """A fresh Event in the same state (the parent's may hold a lock taken at fork time)."""
    fresh = threading.Event()
    if event.is_set():
        fresh.set()
    return fresh


_CLIENTS: weakref.WeakSet[RolloutClient] = weakref.WeakSet()


def _restart_clients_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_restart_clients_in_child)
