"""Small builders shared by the scheduler and engine tests.

- `make_table`: a RequestTable from plain lists.
- `make_view` / `make_candidate`: hand-made inputs for a scheduler's admission round.
- `make_engine`: a ReplicaEngine with a ConstantCostModel and a scheduler built through
  `build_scheduler` + `BuildContext` (the way llmsim.cluster.simulation builds them).
- `check_run_pricer`: the decode-run helper (llmsim.costmodel.decode_run) against a cost model's per-step times.
- `drive`: run one engine in the simulation's own event loop (a SimPy ReplicaProcess and an
  arrivals process), with `check_invariants()` after every step and one `StepRecord` per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import simpy
from hypothesis import strategies as st

from llmsim.cluster.engine import EngineParams, ReplicaEngine
from llmsim.cluster.events import ARRIVAL_PRIORITY, PriorityTimeout, delay_to
from llmsim.cluster.replica import ReplicaProcess
from llmsim.costmodel.constant import ConstantCostModel
from llmsim.kvcache import blocks_for
from llmsim.request import RequestTable
from llmsim.schedulers import SCHEDULERS, BuildContext, Candidate, ReplicaView, RunningBatch, build_scheduler

STEP_S = 0.01


def make_table(prompts, outputs, caps=None, arrivals=None) -> RequestTable:
    n = len(prompts)
    caps = list(outputs) if caps is None else caps
    arrivals = [0.0] * n if arrivals is None else arrivals
    return RequestTable(np.asarray(arrivals, float), np.asarray(prompts), np.asarray(outputs), np.asarray(caps))


def make_view(prompts=(), caps=(), generated=(), kv=None, *, total_blocks=10, block_size=4, free_blocks=None, now_s=0.0) -> ReplicaView:
    """A ReplicaView of decoding requests; kv defaults to the KV convention prompt + generated - 1."""
    p, c, g = (np.asarray(x, dtype=np.int64) for x in (prompts, caps, generated))
    k = p + g - 1 if kv is None else np.asarray(kv, dtype=np.int64)
    if free_blocks is None:
        free_blocks = total_blocks - sum(blocks_for(int(t), block_size) for t in k)
    run = RunningBatch(np.arange(len(p), dtype=np.int64), p, c, g, k)
    return ReplicaView(now_s, block_size, total_blocks, free_blocks, run)


def make_candidate(rid, prompt, cap, generated=0, *, block_size=4, arrival_s=0.0) -> Candidate:
    kv = prompt + generated  # a fresh or recomputed request prefills prompt + generated tokens
    return Candidate(rid, arrival_s, prompt, cap, generated, kv, blocks_for(kv, block_size))


def make_scheduler(kind, config=None, *, seed=0, prior=1024, true_output_tokens=None, rng=None):
    spec = SCHEDULERS[kind]
    cfg = spec.config_cls(**(config or {}))
    ctx = BuildContext(0, np.random.default_rng(seed) if rng is None else rng, prior, true_output_tokens)
    return build_scheduler(kind, cfg, ctx)


def make_engine(table, kind="aggressive", config=None, *, total_blocks=10, block_size=4, step_s=STEP_S,
                host_link_gb_per_s=None, seed=0, prior=None, **params) -> ReplicaEngine:
    """`params` are further EngineParams fields (mode, max_num_seqs, preemption, victim, ...).
    Step-by-step unless fast_forward=True is passed: these tests check individual steps."""
    params.setdefault("fast_forward", False)
    prior = int(table.max_new_tokens.max()) if prior is None else prior
    sched = make_scheduler(kind, config, seed=seed, prior=prior, true_output_tokens=table.output_tokens)
    cost = ConstantCostModel(step_s, host_link_gb_per_s=host_link_gb_per_s)
    return ReplicaEngine(0, table, sched, cost, EngineParams(total_blocks=total_blocks, block_size=block_size, **params))


@dataclass
class StepRecord:
    start_s: float
    end_s: float
    duration_s: float
    swap_s: float
    decode_ids: list[int]
    prefill: list[tuple[int, int]]  # (request id, chunk tokens)
    used_blocks: int  # at plan time (after this step's allocations)
    used_blocks_after: int  # after finish_step (finished requests freed)
    running: list[int]  # after finish_step, admission order
    waiting: list[int]  # after finish_step, queue order
    finished: list[int]
    kv: dict[int, int]  # KV tokens of every request, after the step
    generated: dict[int, int]
    status: dict[int, int]
    swap_used_blocks: int
    evicted: list[int]  # requests evicted while planning this step

    @property
    def tokens(self) -> int:
        return len(self.decode_ids) + sum(c for _, c in self.prefill)


def drive(engine: ReplicaEngine, ids=None, max_steps=10_000) -> list[StepRecord]:
    """Run `engine` until it is idle and every request in `ids` (default: all) has arrived, in the
    simulation's event loop (llmsim.cluster.replica and events), recording every step."""
    t = engine.table
    ids = range(len(t)) if ids is None else ids
    pending = sorted(ids, key=lambda r: (t.arrival_s[r], r))
    env, records, evicted = simpy.Environment(), [], []
    plan_step, finish_step = engine.plan_step, engine.finish_step

    def plan(now_s):
        before = t.evictions.copy()
        step = plan_step(now_s)
        evicted[:] = np.flatnonzero(t.evictions != before).tolist()
        return step

    def finish(step, end_s):
        finished = finish_step(step, end_s)
        engine.check_invariants()
        records.append(StepRecord(
            step.start_s, end_s, step.duration_s, step.swap_s, [int(r) for r in step.decode_ids],
            list(zip(step.prefill_ids, step.prefill_chunk_tokens)), step.used_blocks, engine.kv.used_blocks,
            list(engine.running), list(engine.waiting), list(finished),
            {r: int(t.kv_tokens[r]) for r in range(len(t))}, {r: int(t.generated_tokens[r]) for r in range(len(t))},
            {r: int(t.status[r]) for r in range(len(t))}, engine.swap.used_blocks, list(evicted),
        ))
        if len(records) >= max_steps:
            raise AssertionError(f"engine did not drain in {max_steps} steps")
        return finished

    engine.plan_step, engine.finish_step = plan, finish  # on this instance only
    replica = ReplicaProcess(env, engine)

    def arrivals():
        for rid in pending:
            at_s = float(t.arrival_s[rid])
            if at_s > env.now:
                yield PriorityTimeout(env, delay_to(env, at_s), ARRIVAL_PRIORITY)
            replica.enqueue(rid, at_s)

    env.process(arrivals())
    try:
        env.run()
    finally:
        del engine.plan_step, engine.finish_step
    return records


def check_run_pricer(cm, seqs: int, ctx_sum: int, ctx_max: int, step_times: list[float]) -> None:
    """costmodel.decode_run prices `cm`'s decode runs as `step_times` (the steps' `step_time_s`)
    bit for bit, ends summed one step at a time from its start, and stops after the first step
    ending at or after the horizon (fast-forward relies on all three)."""
    from llmsim.costmodel.decode_run import price_decode_run

    def run(start_s, ctx_sum, ctx_max, steps, horizon_s):
        return price_decode_run(cm, seqs, start_s, ctx_sum, ctx_max, steps, horizon_s)

    ends, durations = run(1.5, ctx_sum, ctx_max, len(step_times), float("inf"))
    assert durations == step_times
    sums, end = [], 1.5
    for d in step_times:
        end += d
        sums.append(end)
    assert ends == sums
    if len(sums) > 2 and sums[0] < sums[1]:
        horizon = sums[1]  # the second step ends exactly at the horizon: it is the last
        assert run(1.5, ctx_sum, ctx_max, len(step_times), horizon) == (sums[:2], step_times[:2])
        assert run(1.5, ctx_sum, ctx_max, len(step_times), horizon - 1e-9)[0] == sums[:2]
    assert run(1.5, ctx_sum, ctx_max, 0, float("inf")) == ([], [])


def draw_arrivals(draw, max_rate_per_s: float) -> dict:
    """A random `workload.arrivals` section for the randomised simulation tests: Poisson, or
    closed-loop clients with think time and re-sends (by the same client, or through the shared queue)."""
    if draw(st.booleans()):
        return {"kind": "closed-loop", "clients": draw(st.integers(1, 24)), "think_time_s": draw(st.sampled_from([0.0, 0.05, 0.3])),
                "resend_failed": draw(st.booleans()), "max_attempts": draw(st.integers(1, 4)),
                "resend_to": draw(st.sampled_from(["same-client", "shared-queue"]))}
    return {"kind": "poisson", "rate_per_s": draw(st.floats(0.5, max_rate_per_s))}


def draw_policy_knobs(draw, kind: str) -> dict:
    """Random knobs every scheduler has (rounds every r steps, admissions per round), plus
    past-future's history window."""
    knobs = {"decode_steps_between_rounds": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        knobs["max_admissions_per_round"] = draw(st.integers(1, 3))
    if kind == "past-future":
        knobs["history_window"] = draw(st.integers(5, 50))
    return knobs
