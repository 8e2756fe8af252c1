"""What a scenario resolves to before any request runs: model, hardware profile, KV capacity,
cost model and engine limits, and the check that every request of a workload can ever run.

Plain Python (no SimPy). Units: tokens, bytes, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import LoadedScenario, Scenario
from ..costmodel import derive_kv_capacity_tokens, load_model, load_profile
from ..errors import LlmsimError
from ..registry import COST_MODELS
from ..workload import Workload
from .engine import EngineParams


@dataclass(frozen=True)
class Resolved:
    """What a scenario resolves to before any request runs."""

    model: object
    profile: object
    kv_capacity_tokens: int
    total_blocks: int
    max_model_len: int
    kv_bytes_per_token_per_gpu: int


def profile_search_dirs(base_dir: Path) -> list[Path]:
    return [base_dir / "hardware_profiles", base_dir.parent / "hardware_profiles", Path.cwd() / "hardware_profiles"]


def resolve(loaded: LoadedScenario) -> Resolved:
    sc = loaded.scenario
    tp = sc.cluster.tensor_parallel
    model = load_model(sc.model)
    profile = load_profile(sc.hardware, profile_search_dirs(loaded.base_dir))
    model.check_tensor_parallel(tp)
    eng = sc.engine
    if eng.kv_capacity_tokens is not None:
        capacity = eng.kv_capacity_tokens // eng.block_size * eng.block_size
        if capacity == 0:
            raise LlmsimError(f"engine.kv_capacity_tokens ({eng.kv_capacity_tokens}) is less than one block of {eng.block_size} tokens")
    else:
        capacity = derive_kv_capacity_tokens(model, profile, tp, eng.gpu_memory_fraction, eng.activation_reserve_gib, eng.block_size)
    max_len = eng.max_model_len or model.max_position_embeddings
    return Resolved(model, profile, capacity, capacity // eng.block_size, max_len, model.kv_bytes_per_token_per_gpu(tp))


def longest_request_tokens(sc: Scenario, res: Resolved) -> int:
    """Prompt + output of the longest request `check_requests` accepts (a session's turn past it
    ends the session, llmsim.workload.sessions)."""
    limit = min(res.max_model_len, res.kv_capacity_tokens + 1)  # peak KV = prompt + output - 1
    if sc.engine.mode == "separate":
        limit = min(limit, sc.engine.max_batched_tokens + 1)
    return limit


def check_requests(sc: Scenario, res: Resolved, wl: Workload) -> None:
    """Refuse a workload that cannot run, saying what to change (instead of a hang or a crash)."""
    total = wl.prompt_tokens + wl.output_tokens
    i = int(np.argmax(total))
    if total[i] > res.max_model_len:
        n = int(np.count_nonzero(total > res.max_model_len))
        raise LlmsimError(
            f"{n} requests are longer than engine.max_model_len={res.max_model_len} tokens (longest: request {i}, "
            f"prompt {wl.prompt_tokens[i]} + output {wl.output_tokens[i]}); raise engine.max_model_len or set workload.filter.max_total_tokens"
        )
    peak_kv = total - 1  # llmsim's KV convention: prompt + output - 1 at the last step
    if peak_kv[i] > res.kv_capacity_tokens:
        raise LlmsimError(
            f"request {i} needs {peak_kv[i]} tokens of KV (prompt {wl.prompt_tokens[i]} + output {wl.output_tokens[i]} - 1) but a replica holds "
            f"{res.kv_capacity_tokens}; raise engine.kv_capacity_tokens or cluster.tensor_parallel, lower workload.max_new_tokens, or filter long requests (workload.filter.max_total_tokens)"
        )
    if sc.engine.mode == "separate" and peak_kv[i] > sc.engine.max_batched_tokens:
        raise LlmsimError(
            f"engine.max_batched_tokens={sc.engine.max_batched_tokens} is smaller than the longest prefill this workload can need "
            f"({peak_kv[i]} tokens: prompt + generated tokens re-prefilled after an eviction); in separate mode a prefill runs in one step, "
            f"so raise engine.max_batched_tokens or use engine.mode: mixed"
        )


def build_cost_model(sc: Scenario, res: Resolved):
    """The scenario's cost model, by its registered kind (llmsim.registry.COST_MODELS)."""
    builder = COST_MODELS.load(sc.cost_model.kind)
    return builder(sc.cost_model, res.model, res.profile, sc.cluster.tensor_parallel)


def engine_params(sc: Scenario, res: Resolved) -> EngineParams:
    eng = sc.engine
    return EngineParams(
        total_blocks=res.total_blocks,
        block_size=eng.block_size,
        mode=eng.mode,
        max_num_seqs=eng.max_num_seqs,
        max_batched_tokens=eng.max_batched_tokens,
        preemption=eng.preemption,
        victim=eng.victim,
        swap_space_bytes=eng.swap_space_gib * 2**30,
        kv_bytes_per_token_per_gpu=res.kv_bytes_per_token_per_gpu,
        record_steps=eng.record_steps,
        fast_forward=eng.fast_forward,
        prefix_caching=eng.prefix_caching,
        guard_max_queue_s=eng.sla_guard.max_queue_s,
        guard_max_tbt_s=eng.sla_guard.max_tbt_s,
        guard_queue_at_rounds_only=eng.sla_guard.check_queue_at == "admission-rounds",
        guard_abort_waiting=eng.sla_guard.abort_waiting,
        reset_round_counter_on_eviction=eng.reset_round_counter_on_eviction,
        # closed-loop clients read a finished request's max_tbt_s at once; the guard syncs every step
        defer_max_tbt=sc.workload.arrivals.kind != "closed-loop" and eng.sla_guard.max_tbt_s is None,
    )
