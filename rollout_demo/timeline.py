"""The demo's PNG: the percent as steps, the error ratio and the latency against their
thresholds, a marker at each decision, the spike and the outage shaded (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt
import pandas as pd

from rollout_demo.checks import TickRecord
from rollout_demo.scenario import (
    ERROR_RATIO_MAX,
    FEATURE,
    LATENCY_MAX,
    OUTAGE,
    SPIKE,
    START,
    at_minute,
)

__all__ = ["draw_timeline"]

_MARKERS = {
    "promote": ("^", "tab:green"),
    "rollback": ("v", "tab:red"),
    "hold": ("o", "tab:orange"),
    "failed": ("X", "black"),
    "recommend": ("*", "tab:blue"),
    "operator": ("D", "tab:cyan"),
}


def _marker(decision: str) -> tuple[str, str, str]:
    """Marker, colour and legend label for a decision label such as "recommend promote"."""
    kind = decision.split(":")[0].split(" ")[0]
    marker, colour = _MARKERS.get(kind, ("s", "grey"))
    return marker, colour, kind


def draw_timeline(
    series: pd.DataFrame,
    records: Sequence[TickRecord],
    path: Path,
    *,
    feature: str = FEATURE,
    start: datetime = START,
    initial_percent: float = 0.0,
    error_slo: tuple[str, float] = ("error_rate", ERROR_RATIO_MAX),
    latency_slo: tuple[str, float] = ("latency_p95", LATENCY_MAX),
    title: str | None = None,
    demo_spans: bool = True,
) -> Path:
    """The demo's timeline; a backtest passes its own feature, start, SLOs and title, and
    `demo_spans=False` (no scripted spike or outage to shade)."""
    mine = series[series["feature"] == feature].copy()
    if demo_spans:
        # the source did not answer during the outage: no line there, as a dashboard would
        when = mine["time"]
        mine.loc[(when >= at_minute(OUTAGE[0])) & (when < at_minute(OUTAGE[1])), "value"] = None
    errors = mine[mine["slo"] == error_slo[0]]
    latency = mine[mine["slo"] == latency_slo[0]]
    figure, (ax_percent, ax_errors, ax_latency) = plt.subplots(
        3, 1, sharex=True, figsize=(12, 8), height_ratios=(2, 1, 1)
    )
    figure.suptitle(title or f"Rollout of {feature!r}: the controller flow over simulated time")

    known = [r for r in records if r.percent is not None]
    if known:
        times = [start, *(r.at for r in known)]
        percents = [initial_percent, *(float(r.percent or 0.0) for r in known)]
        ax_percent.step(times, percents, where="post", color="tab:purple", label="percent")
    seen: set[str] = set()
    for record in known:
        marker, colour, kind = _marker(record.decision)
        ax_percent.scatter(
            record.at,
            record.percent,
            marker=marker,
            color=colour,
            s=70,
            zorder=3,
            label=None if kind in seen else kind,
        )
        seen.add(kind)
    ax_percent.set_ylabel("rollout %")
    ax_percent.set_ylim(-5, 110)
    ax_percent.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")

    ax_errors.plot(errors["time"], errors["value"], color="tab:red", label=error_slo[0])
    ax_errors.axhline(error_slo[1], linestyle="--", color="grey", label="max")
    ax_errors.set_ylabel(error_slo[0])
    ax_errors.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")

    ax_latency.plot(latency["time"], latency["value"], color="tab:blue", label=latency_slo[0])
    ax_latency.axhline(latency_slo[1], linestyle="--", color="grey", label="max")
    ax_latency.set_ylabel(latency_slo[0])
    ax_latency.set_xlabel("simulated time (UTC)")
    ax_latency.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")

    for axis in (ax_percent, ax_errors, ax_latency):
        if demo_spans:
            axis.axvspan(at_minute(SPIKE[0]), at_minute(SPIKE[1]), color="tab:red", alpha=0.08)
            axis.axvspan(at_minute(OUTAGE[0]), at_minute(OUTAGE[1]), color="grey", alpha=0.2)
        axis.grid(alpha=0.3)
    if demo_spans:
        ax_percent.annotate("error spike", (at_minute(SPIKE[0]), 102), fontsize="small")
        ax_percent.annotate("metrics outage", (at_minute(OUTAGE[0]), 102), fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
