"""Fault soak on the real HA stack: many controller flow runs, random real faults, invariants.

    .venv/bin/python benchmarks/soak.py --runs 1000 [--seed 7] [--fault-rate 0.3]

Brings up `rollout stack up --topology ha` on free loopback ports (PostgreSQL + Prefect server,
two process workers, Redis primary + replica + three Sentinels, Prometheus scraping the
sample service, Pushgateway, Alertmanager, the alert bridge) and takes it down at the end,
whatever happens. Each tick is one real run of `rollout-controller/every-10-minutes` (live,
on the soak's own rollouts.yaml in the stack folder: a 30 s window, dwell 3 s, cooldown 6 s),
executed by a worker and waited to a final state; the next tick is created when it is final
(the schedule compressed). Traffic is the stack's sample service, a closed loop on the flag:
healthy and breaching stretches are injected into the feature's code path. Before a run, or
while it is in flight, a real fault at random:

- redis_failover: SIGKILL the Redis primary; Sentinel promotes the replica; the old primary
  comes back as its replica (before the run, or while it runs);
- prometheus_outage: stop Prometheus (SIGTERM) for one or two ticks, then start it on the same
  port and TSDB; or freeze it (SIGSTOP: a server that hangs) and thaw it after the run;
- pushgateway_restart: stop the Pushgateway for the run, start it again after;
- worker_killed: SIGKILL a worker's process group, usually the idle one; sometimes the busy
  one mid-run (its run ends Crashed by the zombie automation); a replacement worker starts;
- concurrent_set / concurrent_pause: an operator's `rollout set` / pause from a thread, a
  random 0-2 s after the run turns Running (racing its read and write);
- corrupt_value: a corrupt rollout_percent before the run, repaired by the operator's
  `rollout set` after it.

Then the whole history is checked (Redis' audit stream, what the soak saw after each tick,
the SLO evidence the soak read from the same Prometheus before and after each run, the
decisions' recorded inputs, the telemetry totals) and one table is printed.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from deployments.ha import fail_over_stack
from deployments.ha_runs import CONTROLLER, busy_worker, state_of, take_down
from deployments.stack import (
    StoppedComponent,
    inject,
    replace_worker,
    signal_component,
    start_component,
    stop_component,
    up,
)
from rollout_core.errors import RolloutError
from rollout_core.flags import AUDIT_STREAM, RedisFlagStore
from rollout_core.redis_connection import connect
from rollout_core.telemetry import CHANGES_KEY, UNCONFIRMED_KEY, totals_from_exposition
from rollout_sdk.keys import flag_key

FEATURE = "google"
SAFE_PERCENT = 10.0
LADDER = (0.0, 10.0, 50.0, 100.0)
CORRUPT = "fifty"
FAULTS = (
    "redis_failover",
    "pushgateway_restart",
    "prometheus_outage",
    "worker_killed",
    "concurrent_set",
    "concurrent_pause",
    "corrupt_value",
)
WINDOW = "30s"
ERRORS = f'sum(increase(action_error_total{{provider="{FEATURE}",action="gmail.send"}}[{WINDOW}]))'
TOTAL = f'sum(increase(action_exec_total{{provider="{FEATURE}",action="gmail.send"}}[{WINDOW}]))'
MAX_ERROR_RATE = 0.01
CONFIG = f"""# the fault soak's controller configuration (benchmarks/soak.py)
defaults:
  ladder: [0, 10, 50, 100]
  safe_percent: {SAFE_PERCENT:g}
  dwell: 3s
  cooldown: 6s
features:
  {FEATURE}:
    slos:
      - name: error_rate
        ratio:
          errors: {ERRORS}
          total: {TOTAL}
        max: {MAX_ERROR_RATE}
        min_samples: 200
"""
# the feature's code path while breaching: at the safe 10% the service's whole error rate is
# still about 5% (the closed loop), far over the 1% limit
BREACH_ERROR_RATE = 0.5
HEALTHY_ERROR_RATE = 0.002
# the soak's own verdict on the evidence: clear either way, or not judged
JUDGED_SAMPLES = 1000
CLEAR_BREACH = 3 * MAX_ERROR_RATE
CLEAR_HEALTHY = MAX_ERROR_RATE / 2
# a tick waits this long for its run to be final (a mid-run kill: the zombie automation marks
# it Crashed after 45-75 s); a run still going after it may cancel the next (CANCEL_NEW)
RUN_CAP_SECONDS = 150.0
CANCELLED_PAUSE_SECONDS = 5.0
MID_RUN_KILL_SHARE = 0.25  # of worker kills; about 11 in 1,000 ticks at a 30% fault rate
PROMETHEUS_HANG_SHARE = 0.1  # of Prometheus outages: SIGSTOP (a hang, ~45 s of query timeouts)
FAILOVER_IN_FLIGHT_SHARE = 0.5
RUNNING_STATES = ("Running",)
FINAL_STATES = ("Completed", "Failed", "Crashed", "Cancelled", "Skipped")


@dataclass
class Observation:
    """What Redis and Prometheus said just before a run was created, or just after it ended."""

    read_ms: tuple[int, int] = (0, 0)  # the Redis read's start and end, Unix ms
    percent: float | None = None  # None: unreadable (Redis failing over) or corrupt
    raw: str | None = None
    paused: bool | None = None
    evidence: str = "unknown"  # healthy | breach | unclear | unknown (Prometheus silent)
    ratio: float | None = None
    samples: float | None = None
    counted: dict[str, int] = field(default_factory=dict)  # the telemetry totals in Redis


@dataclass
class Tick:
    index: int
    faults: list[str]
    breaching: bool
    run_id: str = ""
    state: str = "not created"
    message: str = ""
    began_ms: int = 0  # the tick (traffic, operator, the soak's reads, the fault) began
    created_ms: int = 0  # the run was created
    ended_ms: int = 0  # the run was seen final
    done_ms: int = 0  # the tick's repairs and reads are done
    before: Observation = field(default_factory=Observation)
    after: Observation = field(default_factory=Observation)
    raced: bool = False
    killed_ms: int = 0  # a mid-run kill: when the busy worker was killed
    notes: list[str] = field(default_factory=list)


@dataclass
class OperatorWrite:
    what: str
    audit_id: str | None
    unconfirmed: bool


@dataclass
class Soak:
    directory: Path
    runs: int
    rng: random.Random
    fault_rate: float
    forced: Mapping[int, str] = field(default_factory=dict)  # tick -> "fault[:variant]"
    stretch: int = 0  # ticks per healthy / breaching stretch (0: about ten, at random)
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    ticks: list[Tick] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    pending_survival: list[str] = field(default_factory=list)
    operator_writes: list[OperatorWrite] = field(default_factory=list)
    seen: dict[str, dict[str, str]] = field(default_factory=dict)  # audit id -> fields
    last_seen: str = "-"
    failovers: int = 0
    mid_run_kills: int = 0
    prometheus_hangs: int = 0
    lost_refusals: int = 0
    replica_reads: int = 0  # the soak's reads a replica answered (refused, asked again)
    split_reads: int = 0  # reads of a second master beside an unconfirmed write (excused)
    final_percent: str | None = None
    lost_unconfirmed: int = 0  # seen, then lost in a failover, the write reported unconfirmed
    details: list[str] = field(default_factory=list)  # each violation, said
    switches: list[str] = field(default_factory=list)  # master switches the Sentinels logged
    interrupted: str = ""
    began: float = field(default_factory=time.perf_counter)
    up_seconds: float = 0.0
    breaching: bool = False
    prometheus_down: StoppedComponent | None = None
    prometheus_back_after: int = -1
    stopped_pushgateway: StoppedComponent | None = None
    corrupted_from: str | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    replacing: threading.Thread | None = None
    config_path: Path | None = None
    store: RedisFlagStore | None = None
    client: Any = None  # Prefect's SyncPrefectClient, open while the ticks run
    deployment_id: Any = None
    prometheus: str = ""
    pushgateway: str = ""

    # --- the stack ----------------------------------------------------------------------

    @property
    def redis(self) -> RedisFlagStore:
        if self.store is None:
            raise RuntimeError("the soak's stack is not up")
        return self.store

    @property
    def stack(self) -> Path:
        return self.directory / "stack"

    def start(self) -> None:
        began = time.perf_counter()
        self.log("soak: bringing up the HA stack")
        up(self.stack, usual_ports=False, ui=False, topology="ha", log=self.log)
        self.up_seconds = time.perf_counter() - began
        self.config_path = self.stack / "soak-rollouts.yaml"
        self.config_path.write_text(CONFIG, encoding="utf-8")
        env = state_of(self.stack).env
        self.store = RedisFlagStore(connect(env["REDIS_URL"]))
        self.prometheus = env["PROMETHEUS_BASE_URL"]
        self.pushgateway = env["PUSHGATEWAY_URL"]
        at = datetime.now(UTC)
        self.redis.init(FEATURE, at, by="operator")
        self.redis.set_audience(FEATURE, False, "soak: public", "operator", at)
        inject(self.stack, {"error_rate": HEALTHY_ERROR_RATE})
        self.wait_for_evidence()

    def wait_for_evidence(self, timeout: float = 90) -> None:
        """Until Prometheus has a window of the sample service's traffic to judge."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evidence()[0] == "healthy":
                return
            time.sleep(1)
        raise RuntimeError(f"no traffic evidence in Prometheus after {timeout:.0f} s")

    def sentinel_switches(self) -> list[str]:
        """The master switches the Sentinels logged (`+switch-master`): the soak's own
        failovers and any a Sentinel started by itself (each Sentinel logs each switch; the
        one that logged most)."""
        logs = [
            [
                line
                for line in log.read_text(errors="replace").splitlines()
                if "+switch-master" in line
            ]
            for log in (self.stack / "redis").glob("sentinel-*/sentinel.log")
        ]
        return max(logs, key=len, default=[])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.switches = self.sentinel_switches()
        with contextlib.suppress(Exception):  # a frozen Prometheus would ignore SIGTERM
            signal_component(self.stack, "prometheus", signal.SIGCONT)
        take_down(self.stack)

    # --- one tick -----------------------------------------------------------------------

    def run(self) -> None:
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(state_of(self.stack).env["PREFECT_API_URL"]) as client:
            self.client = client
            self.deployment_id = client.read_deployment_by_name(CONTROLLER).id
            try:
                for index in range(self.runs):
                    last = index == self.runs - 1
                    self.tick(index, last)
                    if (index + 1) % 50 == 0 or last:
                        states = Counter(t.state for t in self.ticks)
                        self.log(
                            f"  {index + 1} ticks in {time.perf_counter() - self.began:.0f} s, "
                            f"{sum(self.injected.values())} faults, runs {dict(states)}"
                        )
            finally:
                self.refresh_states()

    def refresh_states(self) -> None:
        """Runs still going when their tick gave up on them: their state now."""
        for tick in self.ticks:
            if tick.run_id and tick.state not in FINAL_STATES:
                with contextlib.suppress(Exception):
                    state = self.client.read_flow_run(tick.run_id).state
                    tick.state, tick.message = state.name, str(state.message or "")

    def tick(self, index: int, last: bool) -> None:
        began = _now_ms()
        self.traffic_step(index)
        self.operator_step()
        fault, variant = ("", "") if last else self.pick_fault(index)
        if last:
            self.end_prometheus_outage()
        tick = Tick(index, [fault] if fault else [], self.breaching, began_ms=began)
        self.ticks.append(tick)
        tick.before = self.observe()
        try:
            during = self.before_run(tick, fault, variant)
        except Exception as error:  # in the table's notes; the soak goes on
            tick.notes.append(f"fault failed: {type(error).__name__}: {error}")
            during = None
        tick.created_ms = _now_ms()
        run = self.client.create_flow_run_from_deployment(
            self.deployment_id, parameters={"dry_run": False, "config_path": str(self.config_path)}
        )
        run_id = run.id
        tick.run_id = str(run_id)
        state, pending = self.wait(run_id, during)
        if pending is not None:  # the run ended before it was seen Running: the fault now
            tick.notes.append("the run ended before the fault could land in flight")
            pending()
        tick.ended_ms = _now_ms()
        tick.state = state.name if state is not None else "Running"
        tick.message = str(state.message or "") if state is not None else ""
        if tick.state == "Cancelled":  # the slot is taken: the next tick comes a moment later
            time.sleep(CANCELLED_PAUSE_SECONDS)
        self.after_run(tick, fault)
        tick.after = self.observe()
        self.read_audit()
        self.recover_lost_write(tick)
        if tick.state == "Completed":
            for pending in self.pending_survival:
                self.survived[pending] += 1
            self.pending_survival.clear()
        tick.done_ms = _now_ms()

    def wait(
        self, run_id: Any, on_running: Callable[[], None] | None
    ) -> tuple[Any, Callable[[], None] | None]:
        """Poll the run until it is final (or RUN_CAP_SECONDS); `on_running` fires once, the
        first time the run is seen Running. (The last state, `on_running` if it never fired.)"""
        deadline = time.monotonic() + RUN_CAP_SECONDS
        state = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the API busy for a moment: poll again
                state = self.client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                break
            if on_running is not None and state is not None and state.name in RUNNING_STATES:
                on_running()
                on_running = None
            time.sleep(0.2)
        return state, on_running

    # --- traffic and the operator between ticks --------------------------------------------

    def traffic_step(self, index: int) -> None:
        """Stretches healthy or breaching on the feature's code path: of `stretch` ticks each
        when set, else of about ten ticks at random."""
        if self.stretch:
            flip = (index // self.stretch) % 2 == 1 and not self.breaching
            flip = flip or ((index // self.stretch) % 2 == 0 and self.breaching)
        else:
            flip = self.rng.random() < 0.1
        if flip:
            self.breaching = not self.breaching
            rate = BREACH_ERROR_RATE if self.breaching else HEALTHY_ERROR_RATE
            inject(self.stack, {"error_rate": rate})

    def operator_step(self) -> None:
        """A paused feature is resumed by its operator after a few ticks."""
        state = self.observe(evidence=False)
        if state.paused and self.rng.random() < 0.3:
            self.operator(
                "resume",
                lambda at: self.redis.set_paused(FEATURE, False, "soak: resume", "operator", at),
            )

    def operator(self, what: str, write: Callable[[datetime], Any]) -> Any:
        try:
            result = write(datetime.now(UTC))
        except RolloutError as error:
            self.operator_writes.append(OperatorWrite(f"{what}: {error}", None, False))
            return None
        audit_id = getattr(result, "audit_id", None)
        unconfirmed = bool(getattr(result, "unconfirmed", False))
        self.operator_writes.append(OperatorWrite(what, audit_id, unconfirmed))
        return result

    # --- faults -------------------------------------------------------------------------

    def pick_fault(self, index: int) -> tuple[str, str]:
        """(fault, variant) for this tick: the forced one, or one at random at the fault rate
        (none while Prometheus is stopped: that outage is the tick's fault)."""
        if index in self.forced:
            fault, _, variant = self.forced[index].partition(":")
        elif self.prometheus_down is not None or self.rng.random() >= self.fault_rate:
            return "", ""
        else:
            fault, variant = self.rng.choice(FAULTS), ""
        if fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is unknown; expected one of {', '.join(FAULTS)}")
        if not variant and fault == "redis_failover":
            in_flight = self.rng.random() < FAILOVER_IN_FLIGHT_SHARE
            variant = "in_flight" if in_flight else "before"
        elif not variant and fault == "prometheus_outage":
            hang = self.rng.random() < PROMETHEUS_HANG_SHARE
            variant = "hang" if hang else self.rng.choice(("stop1", "stop2"))
        elif not variant and fault == "worker_killed":
            variant = "mid_run" if self.rng.random() < MID_RUN_KILL_SHARE else "idle"
        self.injected[fault] += 1
        self.pending_survival.append(fault)
        return fault, variant

    def before_run(self, tick: Tick, fault: str, variant: str) -> Callable[[], None] | None:
        """Inject `fault`; what to do once the run is Running (a fault in flight), if any."""
        if variant:
            tick.notes.append(variant)
        if fault == "redis_failover":
            if variant == "in_flight":
                return self.in_thread(tick, self.fail_over, delay=self.rng.uniform(0, 1.5))
            self.fail_over()
        elif fault == "prometheus_outage":
            if variant == "hang":
                signal_component(self.stack, "prometheus", signal.SIGSTOP)
                self.prometheus_hangs += 1
            else:
                self.prometheus_down = stop_component(self.stack, "prometheus")
                self.prometheus_back_after = tick.index + (1 if variant == "stop2" else 0)
        elif fault == "pushgateway_restart":
            self.stopped_pushgateway = stop_component(self.stack, "pushgateway")
        elif fault == "worker_killed":
            if variant == "mid_run":
                return lambda: self.kill_busy_worker(tick)
            self.kill_idle_worker(tick)
        elif fault in ("concurrent_set", "concurrent_pause"):
            tick.raced = True
            return self.in_thread(tick, lambda: self.race(fault), self.rng.uniform(0, 2.0))
        elif fault == "corrupt_value":
            key = flag_key(FEATURE, "rollout_percent")
            self.corrupted_from = self.redis.client.get(key)
            self.redis.writer.set(key, CORRUPT)
        return None

    def in_thread(self, tick: Tick, action: Callable[[], None], delay: float) -> Callable[[], None]:
        def later() -> None:
            time.sleep(delay)
            try:
                action()
            except Exception as error:  # reported in the table's notes, never lost
                tick.notes.append(f"fault failed: {type(error).__name__}: {error}")

        def fire() -> None:
            thread = threading.Thread(target=later, daemon=True)
            thread.start()
            self.threads.append(thread)

        return fire

    def fail_over(self) -> None:
        fail_over_stack(self.stack)
        self.failovers += 1

    def race(self, fault: str) -> None:
        if fault == "concurrent_set":
            current = self.observe(evidence=False).percent
            target = self.rng.choice([p for p in LADDER if p != current])
            self.operator(
                f"set {target:g}",
                lambda at: self.redis.set_percent(
                    FEATURE, target, "soak: concurrent set", "operator", at=at
                ),
            )
        else:
            paused = bool(self.observe(evidence=False).paused)
            self.operator(
                "pause" if not paused else "resume",
                lambda at: self.redis.set_paused(
                    FEATURE, not paused, "soak: concurrent pause", "operator", at
                ),
            )

    def kill_busy_worker(self, tick: Tick) -> None:
        worker = busy_worker(self.stack)
        deadline = time.monotonic() + 10
        while worker is None and time.monotonic() < deadline:
            time.sleep(0.05)
            worker = busy_worker(self.stack)
        if worker is None:
            tick.notes.append("no busy worker found: the idle one killed")
            self.kill_idle_worker(tick)
            return
        runs = psutil.Process(worker.pid).children(recursive=True)
        stopped = stop_component(self.stack, worker.name, signal.SIGKILL)
        # Prefect starts each flow run process in its own session: the worker's group kill
        # leaves it running; a host that dies takes it along, so it is killed too
        survivors = [p for p in runs if _running(p)]
        for process in survivors:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
        tick.killed_ms = _now_ms()
        self.mid_run_kills += 1
        tick.notes.append(f"killed busy {worker.name} and its {len(survivors)} run process(es)")
        self.replacing = threading.Thread(target=self.replace, args=(tick, stopped), daemon=True)
        self.replacing.start()

    def kill_idle_worker(self, tick: Tick) -> None:
        workers = [
            c for c in state_of(self.stack).components
            if c.name.startswith("worker") and c.is_alive() and c != busy_worker(self.stack)
        ]  # fmt: skip
        if not workers:
            tick.notes.append("no idle worker: nothing killed")
            return
        victim = self.rng.choice(workers)
        stopped = stop_component(self.stack, victim.name, signal.SIGKILL)
        tick.notes.append(f"killed idle {victim.name}")
        self.replacing = threading.Thread(target=self.replace, args=(tick, stopped), daemon=True)
        self.replacing.start()

    def replace(self, tick: Tick, stopped: StoppedComponent) -> None:
        try:
            replace_worker(self.stack, stopped)
        except Exception as error:
            tick.notes.append(f"replacement worker failed: {error}")

    def after_run(self, tick: Tick, fault: str) -> None:
        """The operator's side after the run: thaw, restart, repair (a step that fails is in
        the table's notes, and the soak goes on)."""
        for thread in self.threads:
            thread.join(60)
        self.threads.clear()
        if self.replacing is not None:
            self.replacing.join(120)
            self.replacing = None
        steps: list[Callable[[], None]] = []
        if "hang" in tick.notes:
            steps.append(lambda: signal_component(self.stack, "prometheus", signal.SIGCONT))
        if self.stopped_pushgateway is not None:
            steps.append(self.restart_pushgateway)
        if self.prometheus_down is not None and tick.index >= self.prometheus_back_after:
            steps.append(self.end_prometheus_outage)
        if fault == "corrupt_value":
            steps.append(self.repair)
        for step in steps:
            try:
                step()
            except Exception as error:
                tick.notes.append(f"repair failed: {type(error).__name__}: {error}")

    def restart_pushgateway(self) -> None:
        if self.stopped_pushgateway is not None:
            start_component(self.stack, self.stopped_pushgateway)
            self.stopped_pushgateway = None

    def repair(self) -> None:
        previous = float(self.corrupted_from) if self.corrupted_from else 0.0
        self.operator(
            "repair",
            lambda at: self.redis.set_percent(
                FEATURE, previous, "soak: repair a corrupt value", "operator", at=at
            ),
        )

    def end_prometheus_outage(self) -> None:
        if self.prometheus_down is not None:
            start_component(self.stack, self.prometheus_down)
            self.prometheus_down = None

    def recover_lost_write(self, tick: Tick) -> None:
        """A feature refused because a failover lost the controller's write: the operator
        looks at the audit and sets the percent again (a new, newer write)."""
        if "Redis lost that write" not in tick.message:
            return
        self.lost_refusals += 1
        current = self.observe(evidence=False).percent
        target = 0.0 if current != 0 else SAFE_PERCENT
        self.operator(
            f"re-set {target:g} after a lost write",
            lambda at: self.redis.set_percent(
                FEATURE, target, "soak: re-set after a lost write", "operator", at=at
            ),
        )

    # --- what the soak sees -------------------------------------------------------------

    def on_master(self, *commands: tuple[Any, ...]) -> list[Any] | None:
        """`commands` in one round trip on the Sentinels' master, checked by ROLE on the same
        connection (redis-py's Sentinel pool can land on the old master just restarted as a
        replica, when a Sentinel that has not heard of the failover names it); None when no
        master answers after a few tries."""
        client = self.redis.client
        for _ in range(6):
            try:
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("ROLE")
                for command in commands:
                    pipe.execute_command(*command)
                role, *replies = pipe.execute()
            except Exception:
                time.sleep(0.3)
                continue
            if str(role[0]) == "master":
                return replies
            self.replica_reads += 1
            client.connection_pool.disconnect()  # the next connection asks the Sentinels
            time.sleep(0.3)
        return None

    def observe(self, evidence: bool = True) -> Observation:
        seen = Observation()
        keys = [flag_key(FEATURE, "rollout_percent"), flag_key(FEATURE, "paused")]
        began = _now_ms()
        replies = self.on_master(("MGET", *keys), ("HGETALL", CHANGES_KEY))
        if replies is not None:
            (raw, paused), counted = replies
            seen.read_ms = (began, _now_ms())
            seen.raw, seen.paused = raw, paused == "true"
            seen.counted = {str(k): int(v) for k, v in dict(counted or {}).items()}
            with contextlib.suppress(TypeError, ValueError):
                seen.percent = float(raw)
        if evidence:
            seen.evidence, seen.ratio, seen.samples = self.evidence()
        return seen

    def evidence(self) -> tuple[str, float | None, float | None]:
        """The soak's verdict on the window the controller's SLO reads, from the same PromQL."""
        try:
            errors, total = (self.query(q) for q in (ERRORS, TOTAL))
        except (OSError, ValueError, KeyError, IndexError):
            return "unknown", None, None
        if errors is None or total is None:
            return "unknown", None, total
        ratio = errors / total if total else None
        if total < JUDGED_SAMPLES or ratio is None:
            return "unclear", ratio, total
        if ratio >= CLEAR_BREACH:
            return "breach", ratio, total
        if ratio <= CLEAR_HEALTHY:
            return "healthy", ratio, total
        return "unclear", ratio, total

    def query(self, promql: str) -> float | None:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=2) as response:
            result = json.loads(response.read())["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def read_audit(self) -> None:
        """Every audit entry written so far, as the master has it now (a later failover must
        not lose a confirmed one)."""
        replies = self.on_master(("XRANGE", AUDIT_STREAM, self.last_seen, "+"))
        for entry_id, fields in replies[0] if replies is not None else []:
            self.seen[str(entry_id)] = _fields(fields)
            self.last_seen = f"({entry_id}"


def _fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields: a dict (RESP3 via redis-py's parser) or a flat list."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(k): str(v) for k, v in zip(raw[::2], raw[1::2], strict=True)}


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- invariants ----------------------------------------------------------------------------


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _is_abort(fields: Mapping[str, str]) -> bool:
    """A fast-abort run's change (the live abort deployment): its inputs carry the alert as a
    pseudo-SLO without a limit."""
    return '"NaN"' in fields.get("inputs", "") or "alert" in fields.get("reason", "").lower()


def check(soak: Soak) -> dict[str, int]:
    """Each invariant's violations over the whole history (the target is zero); what each
    one was goes to `soak.details`."""
    final = soak.on_master(
        ("XRANGE", AUDIT_STREAM, "-", "+"),
        ("HGETALL", CHANGES_KEY),
        ("GET", flag_key(FEATURE, "rollout_percent")),
    )
    if final is None:
        raise RuntimeError("no Redis master answers: the history cannot be checked")
    stream, counted_raw, soak.final_percent = final
    entries = [(str(i), _fields(f)) for i, f in stream]
    present = {entry_id for entry_id, _ in entries}
    applied = [(i, f) for i, f in entries if f.get("dry_run") != "true"]
    # entries the soak saw that a failover then lost, whose write was reported unconfirmed
    # (the run's durability warning, or the operator's result): lost honestly
    unconfirmed_ids = {w.audit_id for w in soak.operator_writes if w.unconfirmed}
    warned = [t for t in soak.ticks if "applied but unconfirmed" in t.message]
    gone = {i: f for i, f in soak.seen.items() if f.get("dry_run") != "true" and i not in present}
    excused = {
        i: f
        for i, f in gone.items()
        if i in unconfirmed_ids or any(t.created_ms <= _stream_ms(i) <= t.ended_ms for t in warned)
    }
    soak.lost_unconfirmed = len(excused)
    counted = {str(k): str(v) for k, v in dict(counted_raw or {}).items()}
    found = {
        "duplicated audit entries": _duplicates(applied),
        "acknowledged writes lost": [
            f"audit entry {i} ({f.get('action')} {f.get('old_percent')} -> "
            f"{f.get('new_percent')} by {f.get('by')}) was seen, then lost, unwarned"
            for i, f in gone.items()
            if i not in excused
        ],
        "changes without an audit entry": _unaudited_changes(soak, applied, excused),
        "promotion without healthy evidence": _blind_promotions(soak, applied),
        "breach not rolled back by the next successful run": _unrolled_breaches(soak),
        "percent moved while paused or killed": _moved_while_paused(soak, applied),
        "telemetry totals != audit counts": _telemetry_mismatch(soak, applied, counted),
        "Pushgateway totals != Redis totals": _pushgateway_mismatch(soak, counted),
    }
    soak.details = [f"{name}: {detail}" for name, details in found.items() for detail in details]
    # an indented detail says where a violation above it happened; it is not one itself
    return {name: sum(not d.startswith("  ") for d in details) for name, details in found.items()}


def _duplicates(applied: list[tuple[str, dict[str, str]]]) -> list[str]:
    ids = Counter(f["write_id"] for _, f in applied if f.get("write_id"))
    return [
        f"write id {write_id} in {count} entries" for write_id, count in ids.items() if count > 1
    ]


def _unaudited_changes(
    soak: Soak, applied: list[tuple[str, dict[str, str]]], lost: Mapping[str, dict[str, str]]
) -> list[str]:
    """The chain of audited percents has no gap (each change starts where the last ended,
    but for the soak's own corrupt values), Redis ends at the last one, and every percent the
    soak read in Redis is the one the last audited change before the read left (or, while a
    write later lost was there, that write's)."""
    problems = []
    chain = [(i, f) for i, f in applied if f.get("feature") == FEATURE and f.get("new_percent")]
    for (before_id, before), (after_id, after) in itertools.pairwise(chain):
        if after.get("action") in ("init", "audience") or after["old_percent"] == CORRUPT:
            continue
        if after["old_percent"] != before["new_percent"]:
            problems.append(
                f"{after_id} starts at {after['old_percent']}, {before_id} ended at "
                f"{before['new_percent']}"
            )
    timelines = [chain]
    if lost:
        with_lost = chain + [(i, f) for i, f in lost.items() if f.get("new_percent")]
        timelines.append(sorted(with_lost, key=lambda item: _stream_key(item[0])))
    for tick in soak.ticks:
        for when, seen in (("before", tick.before), ("after", tick.after)):
            began, ended = seen.read_ms
            if seen.percent is None or not began:
                continue
            expected = [_left_at(timeline, began, ended) for timeline in timelines]
            if all(e is not None and e != seen.percent for e in expected):
                if _read_beside_unconfirmed(soak, chain, seen):
                    soak.split_reads += 1
                    continue
                problems.append(
                    f"tick {tick.index} ({when} its run) read {seen.percent:g}%, the audit "
                    f"says {' or '.join(f'{e:g}%' for e in expected if e is not None)}"
                )
    raw = soak.final_percent
    if chain and raw is not None and _percent(raw) != _percent(chain[-1][1]["new_percent"]):
        problems.append(f"Redis ends at {raw}, the last audited change at {chain[-1]}")
    return problems


def _read_beside_unconfirmed(
    soak: Soak, chain: list[tuple[str, dict[str, str]]], seen: Observation
) -> bool:
    """The read found the percent from just before the last audited change, and that change
    was one its run reported unconfirmed: for a few seconds after a failover two nodes may
    answer ROLE master (Sentinel switched again; the demoted one has not heard yet), the
    controller's write landed on one, the soak's connection read the other. The write was
    not lost (it is in the audit at the end); the read was of a master about to be demoted."""
    began, _ = seen.read_ms
    stamps = [_stream_ms(i) for i, _ in chain]
    done = bisect.bisect_left(stamps, began - 5)
    if not done:
        return False
    entry_ms, entry = stamps[done - 1], chain[done - 1][1]
    warned = any(
        t.created_ms <= entry_ms <= t.ended_ms and "applied but unconfirmed" in t.message
        for t in soak.ticks
    )
    return warned and began - entry_ms < 30_000 and _percent(entry["old_percent"]) == seen.percent


def _left_at(chain: list[tuple[str, dict[str, str]]], began: int, ended: int) -> float | None:
    """The percent the last change before `began` (Unix ms) left; None when a change landed
    while the read ran (ambiguous) or none came before."""
    stamps = [_stream_ms(i) for i, _ in chain]
    done = bisect.bisect_left(stamps, began - 5)
    if (done < len(stamps) and stamps[done] <= ended + 5) or not done:
        return None
    return _percent(chain[done - 1][1]["new_percent"])


def _stream_key(entry_id: str) -> tuple[int, int]:
    ms, _, sequence = entry_id.partition("-")
    return int(ms), int(sequence or 0)


def _percent(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _recorded_slos(fields: Mapping[str, str]) -> list[list[Any]]:
    try:
        return list(json.loads(fields.get("inputs") or "{}").get("s", []))
    except ValueError:
        return []


def _tick_at(soak: Soak, ms: int) -> Tick | None:
    return next((t for t in soak.ticks if t.created_ms <= ms <= t.ended_ms), None)


def _blind_promotions(soak: Soak, applied: list[tuple[str, dict[str, str]]]) -> list[str]:
    """Controller promotions whose recorded readings were not all healthy with enough
    samples, or made during a tick whose evidence was a clear breach before and after."""
    problems = []
    for entry_id, fields in applied:
        if fields.get("by") != "controller" or fields.get("action") != "promote":
            continue
        slos = _recorded_slos(fields)
        healthy = bool(slos) and all(
            s[6] == "healthy" and s[3] is not None and float(s[3]) >= int(s[5]) for s in slos
        )
        tick = _tick_at(soak, _stream_ms(entry_id))
        seen_breach = tick is not None and tick.before.evidence == tick.after.evidence == "breach"
        if not healthy or seen_breach:
            where = f" in tick {tick.index}, seen breaching" if seen_breach and tick else ""
            problems.append(f"promotion {entry_id} on readings {slos}{where}")
    return problems


def _unrolled_breaches(soak: Soak) -> list[str]:
    """Completed runs that read a clear breach (the soak saw it before and after the run)
    above the safe percent, not paused nor raced, and left the percent above it."""
    problems = []
    for tick in soak.ticks:
        before, after = tick.before, tick.after
        if (
            tick.state == "Completed"
            and before.evidence == after.evidence == "breach"
            and before.percent is not None
            and before.percent > SAFE_PERCENT
            and not before.paused
            and not after.paused
            and not tick.raced
            and (after.percent is None or after.percent > SAFE_PERCENT)
        ):
            problems.append(
                f"tick {tick.index}: error ratio {before.ratio:.3f} -> {after.ratio:.3f}, "
                f"percent {before.percent:g} -> {after.percent}; run said {tick.message[:200]!r}"
            )
    return problems


def _moved_while_paused(soak: Soak, applied: list[tuple[str, dict[str, str]]]) -> list[str]:
    """Controller changes applied while the audit's own pause / resume entries say the
    feature was paused, or whose decision read it paused; and changes by a run after its
    worker was killed under it."""
    problems, paused = [], False
    for entry_id, fields in applied:
        if fields.get("feature") != FEATURE:
            continue
        action = fields.get("action")
        if action in ("pause", "resume"):
            paused = action == "pause"
            continue
        if fields.get("by") != "controller" or action not in ("promote", "rollback"):
            continue
        try:
            read_paused = bool(json.loads(fields.get("inputs") or "{}")["f"][3])
        except (ValueError, KeyError, IndexError, TypeError):
            read_paused = False
        if paused or read_paused:
            problems.append(f"{action} {entry_id} while paused")
        ms = _stream_ms(entry_id)
        killed = [t for t in soak.ticks if t.killed_ms and t.killed_ms + 50 < ms <= t.ended_ms]
        if killed and not _is_abort(fields):
            problems.append(f"{action} {entry_id} after tick {killed[0].index}'s worker was killed")
    return problems


def _telemetry_mismatch(
    soak: Soak, applied: list[tuple[str, dict[str, str]]], counted: Mapping[str, str]
) -> list[str]:
    """The controller's promote / rollback totals in Redis against its audit entries; where
    they part, the ticks whose counts moved otherwise than their audit entries."""
    changes = [
        (_stream_ms(i), f["action"])
        for i, f in applied
        if f.get("by") == "controller" and f.get("action") in ("promote", "rollback")
    ]
    audited = Counter(action for _, action in changes)
    problems = [
        f"{action}: telemetry {counted.get(f'{FEATURE}|{action}', 0)}, audit {audited[action]}"
        for action in ("promote", "rollback")
        if int(counted.get(f"{FEATURE}|{action}", 0)) != audited[action]
    ]
    if problems:
        reads = [t.after for t in soak.ticks if t.after.read_ms[0]]
        for before, after in itertools.pairwise(reads):
            for action in ("promote", "rollback"):
                key = f"{FEATURE}|{action}"
                moved = after.counted.get(key, 0) - before.counted.get(key, 0)
                made = sum(
                    1
                    for ms, done in changes
                    if done == action and before.read_ms[1] < ms <= after.read_ms[0]
                )
                if moved != made:
                    where = _tick_before(soak, after)
                    problems.append(f"  {action}s counted {moved}, audited {made} by {where}")
    return problems


def _tick_before(soak: Soak, seen: Observation) -> str:
    found = next((t for t in soak.ticks if t.after is seen), None)
    return (
        f"tick {found.index} ({', '.join(found.faults + found.notes) or 'no fault'})"
        if found
        else "?"
    )


def _pushgateway_mismatch(soak: Soak, counted: Mapping[str, str]) -> list[str]:
    """The totals the last run pushed are Redis' totals (the last tick has no fault)."""
    if (
        not soak.ticks
        or soak.interrupted  # the last tick may have left the Pushgateway stopped
        or soak.ticks[-1].state != "Completed"
        or "telemetry" in soak.ticks[-1].message
    ):
        return []
    try:
        with urllib.request.urlopen(f"{soak.pushgateway}/metrics", timeout=5) as response:
            pushed = totals_from_exposition(response.read().decode(), "rollout_controller")
    except OSError as error:
        return [f"the Pushgateway does not answer: {error}"]
    mismatched = []
    for action in ("promote", "rollback", "hold"):
        mine, theirs = (
            int(counted.get(f"{FEATURE}|{action}", 0)),
            pushed.changes.get((FEATURE, action), 0),
        )
        if int(theirs) != mine:
            mismatched.append(f"{action}: pushed {theirs:g}, Redis {mine}")
    return mismatched


def _median(values: Sequence[int]) -> float:
    return float(values[len(values) // 2]) if values else 0.0


def table(soak: Soak, violations: Mapping[str, int], seconds: float) -> str:
    ran = len(soak.ticks)
    lines = [
        f"soak: {ran} of {soak.runs} scheduled ticks on the HA stack, {seconds:.0f} s "
        f"({(seconds - soak.up_seconds) / max(ran, 1):.1f} s per tick; stack up "
        f"{soak.up_seconds:.0f} s)"
        + (f"; INTERRUPTED: {soak.interrupted}" if soak.interrupted else ""),
        "",
        f"{'fault':<24}{'injected':>10}{'survived':>10}",
    ]
    for fault in FAULTS:
        lines.append(f"{fault:<24}{soak.injected[fault]:>10}{soak.survived[fault]:>10}")
    states = Counter(t.state for t in soak.ticks)
    lines += ["", f"{'runs by state (Prefect)':<24}{'count':>10}"]
    for name in ("Completed", "Failed", "Crashed", "Cancelled", "Skipped"):
        lines.append(f"{name:<24}{states.pop(name, 0):>10}")
    for name, count in sorted(states.items()):
        lines.append(f"{name:<24}{count:>10}")
    lines += ["", f"{'invariant':<52}{'violations':>10}"]
    for name, count in violations.items():
        lines.append(f"{name:<52}{count:>10}")
    controller = Counter(
        f.get("action") for f in soak.seen.values()
        if f.get("by") == "controller" and f.get("dry_run") != "true"
    )  # fmt: skip
    aborts = sum(
        1 for f in soak.seen.values()
        if f.get("by") == "controller" and f.get("dry_run") != "true" and _is_abort(f)
    )  # fmt: skip
    own = sorted(
        (t.done_ms - t.began_ms) - (t.ended_ms - t.created_ms) for t in soak.ticks if t.done_ms
    )
    runs = sorted(t.ended_ms - t.created_ms for t in soak.ticks if t.done_ms)
    zombies = sum(1 for t in soak.ticks if t.state == "Crashed" and "no heartbeat" in t.message)
    judged = Counter(t.before.evidence for t in soak.ticks if t.before.evidence == t.after.evidence)
    ok = sum(1 for t in soak.ticks if t.state == "Completed")
    unconfirmed_runs = sum(1 for t in soak.ticks if "applied but unconfirmed" in t.message)
    counter: int | str = "?"
    with contextlib.suppress(Exception):
        counter = sum(int(v) for v in (soak.redis.client.hgetall(UNCONFIRMED_KEY) or {}).values())
    by_operator = sum(w.unconfirmed for w in soak.operator_writes)
    lines += [
        "",
        f"controller changes applied: {controller.get('promote', 0)} promotions, "
        f"{controller.get('rollback', 0)} rollbacks ({aborts} of them by the fast abort)",
        f"ticks judged by the soak (same evidence before and after the run): "
        f"{judged.get('healthy', 0)} healthy, {judged.get('breach', 0)} breach",
        f"median run (created to final): {_median(runs) / 1000:.1f} s; the soak's own time "
        f"around it (traffic, reads, faults, repairs): median {_median(own):.0f} ms, "
        f"total {sum(own) / 1000:.0f} s",
        f"availability (ticks with a Completed run): {ok}/{ran} = {ok / max(ran, 1):.1%}",
        f"Sentinel failovers: {soak.failovers} by the soak, {len(soak.switches)} master "
        f"switches in the Sentinels' logs; mid-run worker kills: {soak.mid_run_kills} "
        f"({zombies} runs Crashed by the zombie automation); "
        f"Prometheus hangs: {soak.prometheus_hangs}",
        f"writes applied but unconfirmed: {unconfirmed_runs} runs warned, counter "
        f"{counter}, operator writes {by_operator}; soak reads a replica answered (refused): "
        f"{soak.replica_reads}, reads of a second master beside an unconfirmed write (two "
        f"nodes said master for a moment): {soak.split_reads}; "
        f"features refused after a lost write: {soak.lost_refusals}; unconfirmed writes "
        f"lost in a failover: {soak.lost_unconfirmed}",
    ]
    if soak.details:
        lines += ["", "violations:", *soak.details[:30]]
    failed_faults = [
        f"tick {t.index}: {n}" for t in soak.ticks for n in t.notes if "failed" in n or "ended" in n
    ]
    if failed_faults:
        lines += ["", "faults or repairs that did not go as planned:", *failed_faults[:20]]
    return "\n".join(lines)


def soak(
    runs: int,
    seed: int,
    fault_rate: float,
    forced: Mapping[int, str] | None = None,
    stretch: int = 0,
    keep_logs: Path | None = None,
) -> tuple[Soak, dict[str, int], str]:
    """Up the stack, run the ticks, check, always take the stack down; the table of what ran
    (also after Ctrl-C or an error, which is then raised after the table is returned)."""
    directory = Path(tempfile.mkdtemp(prefix="rollout-soak-"))
    state = Soak(directory, runs, random.Random(seed), fault_rate, dict(forced or {}), stretch)
    violations: dict[str, int] = {}
    text = ""
    try:
        state.start()
        try:
            state.run()
        except (Exception, KeyboardInterrupt) as error:
            state.interrupted = f"{type(error).__name__}: {error}"
            if not isinstance(error, KeyboardInterrupt):
                traceback.print_exc()
        state.switches = state.sentinel_switches()
        violations = check(state)
        text = table(state, violations, time.perf_counter() - state.began)
    finally:
        state.stop()
        if not text:  # the stack did not come up, or the check failed: what ran, still
            text = table(state, violations, time.perf_counter() - state.began)
        if keep_logs is not None:
            shutil.copytree(
                state.stack,
                keep_logs,
                ignore=shutil.ignore_patterns("data", "wal", "chunks*", "*.db", "*.rdb"),
                dirs_exist_ok=True,
            )
        shutil.rmtree(directory, ignore_errors=True)
    return state, violations, text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="controller runs (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of ticks with a fault")
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="TICK=FAULT[:VARIANT]",
        help="a fault at a tick, e.g. 3=redis_failover:in_flight or 9=worker_killed:mid_run",
    )
    parser.add_argument("--stretch", type=int, default=0, help="ticks per traffic stretch")
    parser.add_argument("--keep-logs", type=Path, help="copy the stack's logs here at the end")
    parser.add_argument("--history", type=Path, help="write every tick and audit entry as JSON")
    args = parser.parse_args(argv)
    forced = {int(tick): fault for tick, _, fault in (f.partition("=") for f in args.force)}
    state, violations, text = soak(
        args.runs, args.seed, args.fault_rate, forced, args.stretch, args.keep_logs
    )
    print(text)
    if args.history is not None:
        history = {
            "ticks": [dataclasses.asdict(tick) for tick in state.ticks],
            "operator_writes": [dataclasses.asdict(write) for write in state.operator_writes],
            "audit": state.seen,
            "violations": violations,
        }
        args.history.write_text(json.dumps(history, indent=1, default=str), encoding="utf-8")
    return 1 if state.interrupted or any(violations.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
