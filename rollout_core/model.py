"""Values the decision core passes around: readings, verdicts, flag state, decisions.

Everything here is a frozen dataclass or an enum, so a decision can be logged, audited,
rendered as a table row and replayed without any of it changing underneath.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any, Generic, TypeVar

__all__ = [
    "Action",
    "Decision",
    "Deferred",
    "FlagState",
    "GuardResult",
    "QueryError",
    "SloReading",
    "SloSnapshot",
    "SloVerdict",
    "Verdict",
    "describe_missing",
    "format_percent",
    "worst",
]


T = TypeVar("T")


class Deferred(Generic[T]):
    """A value made by `make(*args)` on first use, then kept: the text of a reason or a message,
    which a replay of thousands of holds mostly never reads. It pickles and copies as the value
    itself, so a decision that crosses a process boundary carries plain text."""

    __slots__ = ("_args", "_make", "_value")

    def __init__(self, make: Callable[..., T], *args: Any) -> None:
        self._make: Callable[..., T] | None = make
        self._args = args
        self._value: T | None = None

    def get(self) -> T:
        make = self._make
        if make is not None:
            self._value, self._make, self._args = make(*self._args), None, ()
        return self._value  # type: ignore[return-value]  # made above when it was pending

    def __reduce__(self) -> tuple[Callable[[T], T], tuple[T]]:
        return _same, (self.get(),)


def _same(value: T) -> T:
    return value


_NO_DEFAULT: Any = object()


class _Lazy(Generic[T]):
    """A frozen dataclass field that takes its value or a `Deferred` making it; reading it
    always gives the value (made once, on the first read). Equality, hashing, `repr` and
    `dataclasses.replace` read it like any field, so they see the same text as ever."""

    def __init__(self, default: T = _NO_DEFAULT) -> None:
        self._default = default
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: object | None, owner: type | None = None) -> T:
        if obj is None:  # the dataclass asks for the field's default
            if self._default is _NO_DEFAULT:
                raise AttributeError(self._name)
            return self._default
        stored = obj.__dict__[self._name]
        if type(stored) is Deferred:
            stored = obj.__dict__[self._name] = stored.get()
        return stored  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: T | Deferred[T]) -> None:
        obj.__dict__[self._name] = value


class Verdict(IntEnum):
    """An SLO's verdict, ordered from best to worst so that `worst()` can combine them."""

    HEALTHY = 0
    INCONCLUSIVE = 1
    BREACH = 2

    def __str__(self) -> str:
        return self.name.lower()


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of the verdicts; no verdicts at all is inconclusive, never healthy."""
    return max(verdicts, default=Verdict.INCONCLUSIVE)


class Action(StrEnum):
    """What a decision does to the rollout percent."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    HOLD = "hold"


def format_percent(percent: float) -> str:
    """`10` -> "10%", `0.5` -> "0.5%": the way percents appear in reasons and the audit."""
    return f"{percent:g}%"


@dataclass(frozen=True)
class QueryError:
    """Why one SLO's query gave no reading: Prometheus' own `errorType` (`bad_data`,
    `execution`, `timeout`, ...) or a result of the wrong shape (`several_series`,
    `no_group_label`, `bad_result`), with the labels of the series when there were several.

    A transient error (422, 503: the query may succeed next time) holds the feature; any other
    is a configuration error: the decision still goes through, and the run names the query.
    """

    slo: str
    query: str
    kind: str
    detail: str
    transient: bool = False
    status: int | None = None
    labels: tuple[Mapping[str, str], ...] = ()

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        shown = "; series: " + ", ".join(_labels(x) for x in self.labels[:5]) if self.labels else ""
        more = f" and {len(self.labels) - 5} more" if len(self.labels) > 5 else ""
        return f"{status}{self.kind}: {self.detail}{shown}{more} (query {self.query!r})"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def describe_missing(value: float | None) -> str:
    """Why a value is no data: "no data" when absent, "no data (NaN)" / "(+Inf)" / "(-Inf)"."""
    if value is None:
        return "no data"
    if math.isnan(value):
        return "no data (NaN)"
    return "no data (+Inf)" if value > 0 else "no data (-Inf)"


@dataclass(frozen=True)
class SloReading:
    """One SLO's measurement for one feature.

    `value` is the error ratio, the latency or the count: None when the source had no series,
    NaN or ±Inf as Prometheus answered them (no data, never healthy). `samples` is the request
    count behind a ratio (or a value, when known). `error` says why the query gave no reading.
    """

    name: str
    value: float | None
    samples: float | None = None
    error: QueryError | None = None

    @property
    def is_missing(self) -> bool:
        return self.error is not None or self.value is None or not math.isfinite(self.value)


@dataclass(frozen=True)
class SloSnapshot:
    """Every SLO reading of one feature, taken at one moment."""

    feature: str
    readings: Mapping[str, SloReading]
    taken_at: datetime | None = None

    def reading(self, slo_name: str) -> SloReading:
        """The named reading, or a missing one when the source had nothing for it."""
        found = self.readings.get(slo_name)
        return found if found is not None else SloReading(slo_name, None, None)


@dataclass(frozen=True)
class SloVerdict:
    """The evidence for one SLO: what was seen, against which limit, and the verdict."""

    name: str
    verdict: Verdict
    value: float | None
    limit: float
    samples: float | None = None
    bound: float | None = None  # the 99% Wilson lower bound, for ratio SLOs
    message: _Lazy[str] = _Lazy("")  # a str, or a Deferred one (the policy formats on demand)
    error: QueryError | None = None  # the query problem behind an inconclusive verdict

    def __str__(self) -> str:
        return self.message or f"{self.name}: {self.verdict}"


@dataclass(frozen=True)
class FlagState:
    """A feature's flag keys as read from the store (DESIGN §4)."""

    feature: str
    percent: float = 0.0
    enabled: bool = True
    internal_only: bool = False
    paused: bool = False
    last_change_time: datetime | None = None
    last_percent: float | None = None
    last_rollback_time: datetime | None = None
    exists: bool = True  # False when the percent key is absent (feature never initialised)
    # the raw strings it was parsed from, by field name (None = absent): the compare-and-set
    # checks every one of them, so a change the decision did not see is a conflict
    raw: tuple[tuple[str, str | None], ...] = ()
    # keys only promotions need (history, audience) that do not parse: they hold promotions
    # (the `history` guard) and are a warning on a rollback, e.g. "flags:google:last_percent
    # is 'fifty'; expected ..."
    problems: tuple[str, ...] = ()

    def raw_value(self, field: str) -> str | None:
        """The raw string a field was read as; None when it was absent (or not recorded)."""
        return dict(self.raw).get(field)


@dataclass(frozen=True)
class GuardResult:
    """A guard's answer about a proposed decision: `blocks` is True when it holds the change."""

    name: str
    blocks: bool
    message: _Lazy[str] = _Lazy("")  # a str, or a Deferred one


@dataclass(frozen=True)
class Decision:
    """What the controller decided for one feature, and why, with the numbers.

    `proposed` is what the SLO policy asked for before guards; it differs from `action` when a
    guard (pause, dwell, cooldown, freeze) held the change, so a paused feature still reports
    the decision it would have made.
    """

    feature: str
    action: Action
    from_percent: float
    to_percent: float
    reasons: _Lazy[tuple[str, ...]] = _Lazy()  # a tuple, or a Deferred one (made when read)
    verdicts: tuple[SloVerdict, ...] = ()
    proposed: Action | None = None
    proposed_percent: float | None = None
    guard: str | None = None  # the name of the guard that held the change, if any
    guards: tuple[GuardResult, ...] = field(default=())
    # the compact JSON of what it was decided from (rollout_core.decision_inputs), set on
    # changes only: the audit entry carries it, so `rollout explain` can replay the decision
    inputs: str = field(default="", compare=False, repr=False)

    @property
    def is_change(self) -> bool:
        return self.action is not Action.HOLD and self.to_percent != self.from_percent

    @property
    def configuration_problems(self) -> tuple[str, ...]:
        """The SLO queries that need a configuration fix (400 bad_data, a wrong result shape).
        The decision still stands; the run reports these as configuration errors."""
        return tuple(
            f"SLO {v.name!r}: {v.error}; fix the query in the configuration"
            for v in self.verdicts
            if v.error is not None and not v.error.transient
        )

    @property
    def reason(self) -> str:
        """All reasons on one line, as the audit trail and the run table show them."""
        return "; ".join(self.reasons)
