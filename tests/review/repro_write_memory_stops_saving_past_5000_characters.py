"""R15 defect: tasks/write_memory.py caps the memory at 120 entries because "Prefect refuses a
variable value over 5,000 characters", but 120 entries do not fit in 5,000 characters unless
names are short: an entry is the unit name (a feature name may have 64 characters, a segment
`feature[segment]` more) plus a 15-character audit id and JSON quoting. With 120 features
of 30-character names the value is about 6,000 characters, Variable.set is refused, and
remember_writes only warns: from then on no run saves the memory, so no lost write is
refused anywhere, for any feature. (The Variable also keeps one copy per Redis target ever
used, which only grows.)

Prefect's test server for the Variable; a plain store object carrying the memory, as the
tasks read it (getattr(store, "last_applied")). Run:
.venv/bin/python -m pytest tests/review/<this file> -q
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.write_memory import MEMORY_VARIABLE, remember_writes


@dataclass
class StoreWithMemory:
    last_applied: dict[str, str] = field(default_factory=dict)


def test_the_newest_writes_are_saved_however_many_features_there_are() -> None:
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness
    from prefect.variables import Variable

    @flow
    def save(store: StoreWithMemory, target: str) -> str | None:
        return remember_writes(store, target)  # as the controller flow calls it

    store = StoreWithMemory(
        {f"checkout-service-feature-{n:05d}": f"1796026{n:06d}-0" for n in range(120)}
    )
    target = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/rollout/0"
    with prefect_test_harness(server_startup_timeout=120):
        warning = save(store, target)
        saved = Variable.get(MEMORY_VARIABLE, default=None)
    newest = max(store.last_applied, key=lambda name: store.last_applied[name])
    # observed: a warning "write memory not saved (...)" and no Variable at all
    assert warning is None, warning
    assert saved is not None and newest in saved.get(target, {}), saved
