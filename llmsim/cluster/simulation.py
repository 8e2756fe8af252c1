"""Build and run one simulation on one SimPy event loop.

`simulate(loaded_scenario)` resolves the scenario (llmsim.cluster.build), materialises the
workload, checks that every request can ever run, builds one engine and one SimPy process per
replica (llmsim.cluster.replica), a router, and the load process (open-loop arrivals or a pool of
closed-loop clients, llmsim.cluster.load), runs `env.run()`, and returns the per-request table
and the summary. The order of events at equal times is defined in llmsim.cluster.events.

Fast-forward (llmsim.cluster.fastforward) changes how many events a replica takes, not what
happens: `engine.fast_forward: false` gives the same results, one event per engine step.

Units: seconds of simulated time, tokens.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from ..config import LoadedScenario, Scenario, scheduler_config
from ..errors import LlmsimError
from ..metrics import good_checker, prefix_cache_summary, request_frame, summarize
from ..request import RequestTable, TrueOutputLengths
from ..rng import stream
from ..schedulers import SCHEDULERS, BuildContext, build_scheduler
from ..workload import build_workload
from .build import build_cost_model, check_requests, engine_params, longest_request_tokens, resolve
from .engine import ReplicaEngine
from .load import ClientPool, open_loop_arrivals
from .replica import ReplicaProcess
from .session_load import SessionPool
from ..registry import ROUTERS
from .router import routes_ahead

STEP_COLUMNS = ("start_s", "duration_s", "decode_seqs", "prefill_tokens", "running", "waiting", "used_blocks", "evictions_so_far")


@dataclass
class SimulationResult:
    scenario: Scenario
    scheduler: str
    requests: pd.DataFrame
    summary: dict
    derived: dict
    notes: list[str]
    steps: pd.DataFrame | None = None
    wall_s: float = 0.0
    engines: list = field(default_factory=list, repr=False)  # for invariant checks in tests
    table: RequestTable | None = field(default=None, repr=False)


def simulate(loaded: LoadedScenario, progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Run the scenario; `progress(ended, total)` is called as requests end (total is None for
    closed-loop load bounded by duration)."""
    wall0 = time.perf_counter()
    sc = loaded.scenario
    res = resolve(loaded)
    wl = build_workload(sc.workload, sc.seed, longest_request_tokens(sc, res))
    if len(wl) == 0:
        raise LlmsimError("workload: no requests (raise workload.num_requests or workload.duration_s)")
    check_requests(sc, res, wl)
    closed = sc.workload.arrivals.kind == "closed-loop"
    if closed or wl.sessions is not None:  # rows are written as requests are sent
        table = RequestTable(capacity=min(len(wl), 1 << 16))
    else:
        table = RequestTable(wl.arrival_s, wl.prompt_tokens, wl.output_tokens, wl.max_new_tokens)
    table.block_hash_ids = wl.block_hash_ids
    table.hash_block_tokens = wl.hash_block_tokens
    engines = _build_engines(sc, res, wl, table)
    router = ROUTERS.load(sc.cluster.router)(stream(sc.seed, "router"))
    if hasattr(router, "configure"):
        router.configure(sc.cluster)  # its knobs in the scenario (cache-aware's weights)
    if hasattr(router, "attach"):
        router.attach(engines)
    if not closed and wl.sessions is None:
        _tell_next_arrivals(engines, router, table.column("arrival_s"))

    env = simpy.Environment()
    total = None if closed and sc.workload.num_requests is None else len(wl)
    if wl.sessions is not None:  # sessions can end early: the turns drawn are an upper bound
        total = None
    counter = _EndCounter(total, progress)
    replicas = [ReplicaProcess(env, e, counter) for e in engines]

    def dispatch(rid: int, seen_s: float) -> None:
        replicas[router.route(rid, engines, seen_s)].enqueue(rid, seen_s)

    clients = None
    if wl.sessions is not None:
        a = sc.workload.arrivals
        clients = SessionPool(env, table, wl, dispatch, a.clients if closed else None,
                              a.think_time_s if closed else 0.0, stop_sending_s=sc.workload.duration_s,
                              max_turns=sc.workload.num_requests)
        counter.clients = clients
    elif closed:
        a = sc.workload.arrivals
        clients = ClientPool(env, table, wl.prompt_tokens, wl.output_tokens, wl.max_new_tokens, dispatch,
                             good_checker(table, sc.sla.model_dump()), a.clients, a.think_time_s, a.resend_failed,
                             a.max_attempts, stop_sending_s=sc.workload.duration_s, shared_queue=a.resend_to == "shared-queue")
        counter.clients = clients
    else:
        env.process(open_loop_arrivals(env, table.column("arrival_s"), dispatch))
    _run_without_cyclic_gc(env)
    for e in engines:
        e.sync()  # progress of decoding requests is written lazily (decode_batch.py); nothing should be left
    counter.report()
    return _result(sc, res, wl, table, engines, clients, time.perf_counter() - wall0)


def _build_engines(sc: Scenario, res, wl, table: RequestTable) -> list[ReplicaEngine]:
    kind, params, cost_model = sc.scheduler.kind, engine_params(sc, res), build_cost_model(sc, res)
    engines = []
    for i in range(sc.cluster.replicas):
        ctx = BuildContext(i, stream(sc.seed, f"scheduler/replica-{i}"), wl.default_prior_output_tokens, TrueOutputLengths(table),
                           sc.workload.ignore_eos)
        sched = build_scheduler(kind, scheduler_config(sc.scheduler), ctx)
        engines.append(ReplicaEngine(i, table, sched, cost_model, params))
    return engines


def _tell_next_arrivals(engines: list[ReplicaEngine], router, arrival_s: np.ndarray) -> None:
    """Where each open-loop request's replica is known before it arrives (one replica, or a router
    that ignores load: `router.routes_ahead`), tell each engine when its next request comes, so
    fast-forward plans runs that end there instead of runs that the arrival would cut."""
    routes = routes_ahead(router, len(arrival_s), len(engines))
    if routes is None:
        return
    for e in engines:
        times = arrival_s[routes == e.index].tolist() + [math.inf]
        e.next_arrival_s = (lambda eng, ts: (lambda: ts[eng.enqueued]))(e, times)


class _EndCounter:
    """Counts requests as they end, hands them to the client pool, and reports progress."""

    def __init__(self, total: int | None, progress) -> None:
        self.total, self.progress, self.ended = total, progress, 0
        self.every = max(1, (total or 10_000) // 200)
        self.clients: ClientPool | None = None

    def __call__(self, ids: list[int]) -> None:
        before = self.ended
        self.ended += len(ids)
        if self.clients is not None:
            self.clients.notify_done(ids)
        if self.progress is not None and self.ended // self.every != before // self.every:
            self.progress(self.ended, self.total)

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.ended, self.total)


def _run_without_cyclic_gc(env: simpy.Environment) -> None:
    """env.run() with the cyclic garbage collector paused. The event loop leaves no garbage in
    reference cycles (a collection after the run finds the same 10 to 20 objects after 1,000
    requests as after 100,000), so the collector would only walk the live objects again and
    again: about 2 % of a past-future run. Reference counting still frees everything."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        env.run()
    finally:
        if collecting:
            gc.enable()


def _result(sc: Scenario, res, wl, table: RequestTable, engines: list[ReplicaEngine], clients, wall_s: float) -> SimulationResult:
    kind = sc.scheduler.kind
    df = request_frame(table, sc.sla.model_dump())
    summary = summarize(df, [e.stats for e in engines], res.total_blocks, table.column("end_s"))
    summary = {
        "scenario": sc.name,
        "scheduler": kind,
        # the oracle admits with the exact output lengths: not deployable, and not an upper bound
        # on goodput (aggressive can beat it)
        "oracle_exact_lengths": SCHEDULERS[kind].is_oracle,
        "max_new_tokens_mode": wl.cap_mode,
        "load": "closed-loop" if sc.workload.arrivals.kind == "closed-loop" else "open-loop",
        "seed": sc.seed,
        **summary,
        "sla": {k: v for k, v in sc.sla.model_dump().items() if v is not None},
    }
    if sc.engine.prefix_caching:
        summary["prefix_cache"] = prefix_cache_summary([e.stats for e in engines], [e.kv.evicted_blocks for e in engines])
    if sc.workload.arrivals.kind == "closed-loop":
        summary["clients"] = sc.workload.arrivals.clients
    if clients is not None:
        summary["max_in_flight"] = clients.max_in_flight
    derived = {
        "kv_capacity_tokens": res.kv_capacity_tokens,
        "kv_blocks": res.total_blocks,
        "max_model_len": res.max_model_len,
        "kv_bytes_per_token_per_gpu": res.kv_bytes_per_token_per_gpu,
        "hardware_fidelity": res.profile.calibration.fidelity,
        "replica_busy_s": [e.stats.busy_s for e in engines],
        "replica_steps": [e.stats.steps for e in engines],
        "replica_timeouts": [e.stats.timeouts for e in engines],
    }
    steps = None
    if sc.engine.record_steps:
        frames = [pd.DataFrame(e.stats.step_log, columns=STEP_COLUMNS).assign(replica=e.index) for e in engines]
        steps = pd.concat(frames, ignore_index=True)
    notes = list(wl.notes)
    if sc.engine.prefix_caching and wl.block_hash_ids is None:
        notes.append("engine.prefix_caching is on but the workload has no block hash ids (only traces such as Mooncake's "
                     "and session workloads carry them): llmsim does not know token contents, so no prompt block was ever found cached")
    if wl.sessions is not None:
        _session_results(df, summary, notes, wl, clients)
    elif clients is not None and clients.abandoned:
        summary["abandoned"] = clients.abandoned
        notes.append(f"{clients.abandoned:,} requests were abandoned after {sc.workload.arrivals.max_attempts} failed attempts "
                     "(workload.arrivals.max_attempts); set it to null to retry each until it succeeds")
    return SimulationResult(sc, kind, df, summary, derived, notes, steps, wall_s, engines, table)


def _session_results(df: pd.DataFrame, summary: dict, notes: list[str], wl, pool: SessionPool) -> None:
    """Session and turn of each request, the session counts, and notes on sessions cut short."""
    plan = wl.sessions
    df["session"] = df["client"]
    df["turn"] = df["origin_id"].to_numpy() - plan.first_turn[df["client"].to_numpy()]
    summary["sessions"] = counts = pool.summary()
    notes.append(f"sessions: {counts['started']:,} of {counts['sessions']:,} started, {counts['completed']:,} completed, "
                 f"{len(df):,} turns sent ({len(df) / max(counts['started'], 1):.2f} per started session)")
    if counts["failed"]:
        notes.append(f"{counts['failed']:,} sessions ended at a dropped or aborted turn (the next prompt would need its answer)")
    if counts["cut_by_run_end"]:
        notes.append(f"{counts['cut_by_run_end']:,} sessions were cut when the run stopped sending "
                     "(workload.duration_s passed or workload.num_requests turns were sent)")
    if counts["not_started"]:
        notes.append(f"{counts['not_started']:,} of {counts['sessions']:,} sessions never started "
                     "(workload.duration_s passed or workload.num_requests turns were sent first)")
