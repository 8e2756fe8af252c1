"""Can a scenario run at all? Checks made when it is loaded, before anything big is allocated.

`check_feasible(scenario, base_dir)` (called by llmsim.config after validation, so the CLI, the
Python API and every sweep point get it) raises `LlmsimError`, one line naming the setting, when:

- memory: the request table, workload arrays and results of the run would not fit in this
  machine's physical memory, estimated from the number of requests (about `BYTES_PER_REQUEST`
  each, measured), the closed-loop request stream drawn ahead, and the replicas;
- time: simulated times would pass `MAX_SIMULATED_S`, where a float64 no longer resolves a
  microsecond (a near-zero rate, a huge duration, think time or step time);
- KV: an explicit `engine.kv_capacity_tokens` plus the model's weights does not fit in the GPU's
  memory (model and profile that cannot be loaded are left to the run, which names them).

`scenario_notes(scenario)` returns warnings that do not stop a run: `engine.max_model_len` above
the model's context length (the shipped paper scenarios do this on purpose).

Units: bytes (memory), GiB (2^30 bytes) in messages, seconds of simulated time, tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LlmsimError

# Peak memory per request of a whole run (request table, workload arrays, the per-request results
# frame and its CSV): 540 bytes measured at 400,000 requests (Linux, numpy 2), rounded up.
BYTES_PER_REQUEST = 600
BYTES_PER_STREAM_ENTRY = 32  # a closed-loop stream drawn ahead of the run: three int64 arrays and slack
BYTES_PER_REPLICA = 64 * 1024  # engine, scheduler and decode batch: ~10 KB measured, with room for their logs
MAX_SIMULATED_S = 1e9  # ~32 years: a float64 time there still resolves 0.1 microsecond
_GIB = 2**30


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _requests_drawn(sc) -> tuple[float, str] | None:
    """(requests the run materialises, the setting that says so), or None when a trace bounds it."""
    w, a = sc.workload, sc.workload.arrivals
    if w.trace is not None:
        return None  # at most the trace's rows, and the file is read in full anyway
    if w.sessions is not None:  # the sessions' turns, drawn whole (llmsim.workload.sessions)
        t = w.sessions.turns
        mean = {"fixed": lambda: t.turns, "uniform": lambda: (t.min + t.max) / 2, "geometric": lambda: t.mean}[t.kind]()
        return w.sessions.count * mean, f"workload.sessions.count={w.sessions.count:,} with {mean:g} turns each on average"
    if w.num_requests is not None:
        return float(w.num_requests), f"workload.num_requests={w.num_requests:,}"
    if a.kind in ("poisson", "gamma"):
        return a.rate_per_s * w.duration_s * 1.1 + 16, f"workload.duration_s={w.duration_s:g} at rate_per_s={a.rate_per_s:g}"
    return None


def _check_memory(sc) -> None:
    memory = physical_memory_bytes()
    if memory is None:
        return
    have = f"more than this machine's {memory / _GIB:,.1f} GiB of memory"
    drawn = _requests_drawn(sc)
    if drawn is not None and drawn[0] * BYTES_PER_REQUEST > memory:
        raise LlmsimError(f"{drawn[1]}: about {drawn[0]:,.0f} requests of ~{BYTES_PER_REQUEST} bytes each, "
                          f"{drawn[0] * BYTES_PER_REQUEST / _GIB:,.0f} GiB in all, {have}; simulate fewer requests")
    w, a = sc.workload, sc.workload.arrivals
    if a.kind == "closed-loop" and w.num_requests is None and w.trace is None and w.sessions is None:
        stream = max(10_000.0, a.clients * w.duration_s * 20)  # what llmsim.workload draws ahead
        if stream * BYTES_PER_STREAM_ENTRY > memory:
            raise LlmsimError(f"workload.arrivals.clients={a.clients:,} for duration_s={w.duration_s:g}: the request stream "
                              f"drawn ahead ({stream:,.0f} requests) takes {stream * BYTES_PER_STREAM_ENTRY / _GIB:,.0f} GiB, "
                              f"{have}; set workload.num_requests or fewer clients")
    replicas = sc.cluster.replicas
    if replicas * BYTES_PER_REPLICA > memory:
        raise LlmsimError(f"cluster.replicas={replicas:,}: about {BYTES_PER_REPLICA // 1024} KiB each, "
                          f"{replicas * BYTES_PER_REPLICA / _GIB:,.0f} GiB in all, {have}")


def _check_span(sc) -> None:
    """Refuse settings whose simulated times pass MAX_SIMULATED_S."""
    w, a = sc.workload, sc.workload.arrivals
    limit = f"llmsim keeps times to within a microsecond only up to {MAX_SIMULATED_S:g} s (about 32 years)"
    if w.duration_s is not None and w.duration_s > MAX_SIMULATED_S:
        raise LlmsimError(f"workload.duration_s={w.duration_s:g}: {limit}")
    if a.kind in ("poisson", "gamma") and w.num_requests is not None and w.trace is None:
        span_s = (w.num_requests - 1) / a.rate_per_s
        if span_s > MAX_SIMULATED_S:
            raise LlmsimError(f"workload.arrivals.rate_per_s={a.rate_per_s:g}: {w.num_requests:,} requests would arrive over "
                              f"about {span_s:.3g} s of simulated time; {limit}: raise the rate or lower num_requests")
    if a.kind == "closed-loop" and a.think_time_s > MAX_SIMULATED_S:
        raise LlmsimError(f"workload.arrivals.think_time_s={a.think_time_s:g}: {limit}")
    step_s = getattr(sc.cost_model, "step_time_s", None)
    if step_s is not None and step_s > MAX_SIMULATED_S:
        raise LlmsimError(f"cost_model.step_time_s={step_s:g}: {limit}")


def _model_and_profile(sc, base_dir: Path):
    """(model, profile) of the scenario, or None when either cannot be loaded (the run says why)."""
    from .cluster.build import profile_search_dirs
    from .costmodel import load_model, load_profile

    try:
        return load_model(sc.model), load_profile(sc.hardware, profile_search_dirs(Path(base_dir)))
    except LlmsimError:
        return None


def _check_kv_fits(sc, base_dir: Path) -> None:
    tokens, tp = sc.engine.kv_capacity_tokens, sc.cluster.tensor_parallel
    loaded = _model_and_profile(sc, base_dir) if tokens is not None else None
    if loaded is None:
        return
    model, profile = loaded
    try:
        per_token, weights = model.kv_bytes_per_token_per_gpu(tp), model.weight_bytes_per_gpu(tp)
    except (LlmsimError, ValueError, ZeroDivisionError):
        return  # a tensor-parallel degree the model cannot take: the run reports it
    memory = profile.hardware.memory_gib * _GIB
    if tokens * per_token + weights > memory:
        raise LlmsimError(
            f"engine.kv_capacity_tokens={tokens:,} needs {tokens * per_token / _GIB:,.1f} GiB of KV per GPU "
            f"({per_token:,} bytes per token at tensor_parallel={tp}) plus {weights / _GIB:.1f} GiB of {model.name} weights, "
            f"more than the {profile.hardware.memory_gib:g} GiB of {profile.hardware.name}; lower it, raise "
            "cluster.tensor_parallel, or leave it null to derive it from the GPU's memory")


def check_feasible(sc, base_dir: Path) -> None:
    """Raise `LlmsimError` if scenario `sc` cannot run (see the module docstring)."""
    _check_memory(sc)
    _check_span(sc)
    _check_kv_fits(sc, base_dir)


def scenario_notes(sc, base_dir: Path) -> list[str]:
    """Warnings about `sc` that do not stop a run."""
    notes = []
    max_len = sc.engine.max_model_len
    loaded = _model_and_profile(sc, base_dir) if max_len is not None else None
    if loaded is not None and max_len > loaded[0].max_position_embeddings:
        notes.append(f"engine.max_model_len={max_len:,} is above {loaded[0].name}'s context length of "
                     f"{loaded[0].max_position_embeddings:,} tokens (max_position_embeddings): requests that long run "
                     "as if the model supported them (the cost model extrapolates)")
    return notes
