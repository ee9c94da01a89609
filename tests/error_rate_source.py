"""An SLO source for controller passes in tests: one error-rate reading for every feature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rollout_core.config import FeatureSpec
from rollout_core.model import SloReading, SloSnapshot


@dataclass(frozen=True)
class ErrorRateSource:
    """`rate` over `requests` for every feature's `error_rate`: 0.2 (20%) is a breach with
    evidence, 0.001 (0.1%) healthy."""

    rate: float
    requests: float = 5000

    def fetch(self, specs: Sequence[FeatureSpec], at: datetime) -> Mapping[str, SloSnapshot]:
        reading = SloReading("error_rate", self.rate, self.requests)
        return {s.name: SloSnapshot(s.name, {"error_rate": reading}, at) for s in specs}
