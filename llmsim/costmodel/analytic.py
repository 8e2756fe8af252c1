"""Analytic iteration-time model: a roofline per kernel, from spec peaks and efficiency factors.

Implements docs/cost-model.md §1. One iteration on one GPU of a tensor-parallel group is

    overheads.step_s + overheads.per_seq_s x n
    + layers x (GEMMs qkv, o, gate_up, down on T tokens + elementwise kernels on T tokens
                + prefill attention + decode attention + 2 all-reduces of T x hidden)
    + embedding, final norm, one more all-reduce (vocab-parallel embedding) + LM head on n rows

where T is the number of new tokens and n the number of sequences. Each GEMM takes
launch + smooth_max(flops / achieved FLOP/s, bytes / achieved bandwidth) (roofline.py), at least
the kernel floor; fused-MoE expert GEMMs run at `moe_gemm_efficiency` of those rates; attention is
the same smooth roofline and elementwise kernels take launch + bytes / bandwidth. The engine
overheads (overheads.py) add per step, per sequence and per sampled logit. All results are
seconds; rates are stored in FLOP/s and bytes/s.

Speed matters (one call per simulated step): everything that depends only on T or only on n is
cached in dicts keyed by that integer, and attention is closed-form, so a decode-only call is a
dict lookup plus a few float operations.
"""

from __future__ import annotations

from llmsim.costmodel.base import BatchShape
from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.composed import ComposedCostModel
from llmsim.costmodel.profile import HardwareProfile
from llmsim.costmodel.roofline import (DEFAULT_GEMM_LAUNCH_US, DEFAULT_KERNEL_LAUNCH_US, DEFAULT_MOE_GEMM_EFFICIENCY,
                                       DEFAULT_ROOFLINE_P, allreduce_params, smooth_max, smooth_max_2)
from llmsim.costmodel.roofline_run import RunPricers


class AnalyticCostModel(ComposedCostModel):
    """CostModel from a model architecture, an (analytic) hardware profile and a TP degree."""

    def __init__(self, model: ModelArch, profile: HardwareProfile, tensor_parallel: int = 1) -> None:
        model.check_tensor_parallel(tensor_parallel)
        self.model = model
        self.profile = profile
        self.tensor_parallel = tp = tensor_parallel
        self._dtype_bytes = model.dtype_bytes
        self._layers = model.num_hidden_layers
        self._init_rates(profile)
        self._init_shapes(model, tp)

        # All-reduces per step and their cost (ring all-reduce over the TP group, per-TP fit).
        self._num_allreduces = 2 * self._layers + 1 if tp > 1 else 0  # + vocab-parallel embedding
        self._allreduce_latency_s, self._allreduce_s_per_byte = allreduce_params(profile.comm, tp)

        self._init_caches()
        self._run_pricers = RunPricers(self._run_constants)  # decode_run_fn's, by sequence count

    def _init_rates(self, profile: HardwareProfile) -> None:
        """Achieved rates (FLOP/s, bytes/s) and the smallest kernel time (s), from the profile's spec
        peaks and efficiency factors."""
        hw, eff = profile.hardware, profile.efficiency
        peak_flops_per_s = hw.peak_bf16_tflops * 1e12
        hbm_bytes_per_s = hw.hbm_gb_per_s * 1e9
        self._peak_flops_per_s = peak_flops_per_s
        self._hbm_bytes_per_s = hbm_bytes_per_s
        self._gemm_flops_per_s = peak_flops_per_s * eff.gemm_compute
        self._gemm_bytes_per_s = hbm_bytes_per_s * eff.gemm_bandwidth
        self._attn_flops_per_s = peak_flops_per_s * eff.attention_prefill_compute
        self._attn_bytes_per_s = hbm_bytes_per_s * eff.attention_decode_bandwidth
        self._elem_bytes_per_s = hbm_bytes_per_s * eff.elementwise_bandwidth
        self._floor_s = eff.kernel_floor_us * 1e-6
        self._host_link_bytes_per_s = hw.host_link_gb_per_s * 1e9
        # Optional fields: None takes the cited defaults of roofline.py.
        self._p = DEFAULT_ROOFLINE_P if eff.roofline_p is None else eff.roofline_p
        self._launch_s = (DEFAULT_KERNEL_LAUNCH_US if eff.kernel_launch_us is None else eff.kernel_launch_us) * 1e-6
        self._gemm_launch_s = (DEFAULT_GEMM_LAUNCH_US if eff.gemm_launch_us is None else eff.gemm_launch_us) * 1e-6
        self._moe_eff = DEFAULT_MOE_GEMM_EFFICIENCY if eff.moe_gemm_efficiency is None else eff.moe_gemm_efficiency

    def _init_shapes(self, model: ModelArch, tp: int) -> None:
        """Per-GPU shapes after sharding over `tp` GPUs: the GEMMs, the bytes per token of the
        elementwise kernels, and the attention constants per layer."""
        dt = self._dtype_bytes
        hidden, head_dim = model.hidden_size, model.head_dim
        q_heads, kv_heads = model.q_heads_per_gpu(tp), model.kv_heads_per_gpu(tp)
        q_dim, kv_dim = q_heads * head_dim, kv_heads * head_dim
        inter = -(-model.intermediate_size // tp)
        self._hidden = hidden
        self._vocab_shard = -(-model.vocab_size // tp)
        self._experts = model.num_experts
        self._top_k = model.experts_per_token

        # GEMMs as (N, K): output features x input features; M is the token count.
        self._attn_gemms = ((q_dim + 2 * kv_dim, hidden), (hidden, q_dim))  # qkv, o
        self._mlp_gemms = ((2 * inter, hidden), (hidden, inter))  # gate_up, down (per expert)
        self._router_gemm = (model.num_local_experts, hidden) if model.is_moe else None

        # Elementwise kernels per layer, as bytes moved per token (read + write).
        self._elem_bytes_per_token = (
            4 * hidden * dt,  # fused residual-add + RMSNorm before attention: read x, res; write both
            4 * hidden * dt,  # the same before the MLP
            2 * (q_dim + kv_dim) * dt,  # rotary embedding, in place on q and k
            3 * inter * dt * self._top_k,  # SiLU(gate) x up: read 2 x inter, write inter, per expert
            4 * kv_dim * dt,  # write K and V into the paged cache: read both, write both
        )
        # Outside the layers: embedding lookup (read a row, write it) and the final norm.
        self._head_elem_bytes_per_token = (2 * hidden * dt, 4 * hidden * dt)

        # Attention constants per layer per GPU.
        self._kv_bytes_per_token_layer = 2 * kv_dim * dt  # K and V of one cached token
        self._attn_flops_per_pair = 4 * q_dim  # QK^T and PV: 2 FLOPs each per head dim per pair
        self._q_bytes_per_token = 2 * q_dim * dt  # read the query, write the output

    def __repr__(self) -> str:
        return (
            f"AnalyticCostModel({self.model.name}, {self.profile.hardware.name}, "
            f"tensor_parallel={self.tensor_parallel})"
        )

    # ----- kernel rooflines -----

    def _kernel_s(self, launch_s: float, compute_s: float, memory_s: float) -> float:
        """launch + smooth roofline of the two times, at least the kernel floor."""
        t = launch_s + smooth_max(compute_s, memory_s, self._p)
        return t if t > self._floor_s else self._floor_s

    def _elem_s(self, num_bytes: float) -> float:
        """One memory-bound elementwise kernel moving `num_bytes`."""
        return self._kernel_s(self._launch_s, 0.0, num_bytes / self._elem_bytes_per_s)

    def _gemm_s(self, m: float, n: int, k: int) -> float:
        """One GEMM of (m x k) @ (k x n): launch + smooth compute / weight-streaming roofline."""
        flops = 2.0 * m * n * k
        moved_bytes = (m * k + k * n + m * n) * self._dtype_bytes
        return self._kernel_s(self._gemm_launch_s, flops / self._gemm_flops_per_s, moved_bytes / self._gemm_bytes_per_s)

    def _moe_gemm_s(self, tokens: int, n: int, k: int) -> float:
        """One fused-MoE GEMM launch: T x top_k rows over the experts they hit.

        Each expert is hit by at least one of T tokens with probability 1 - (1 - k/E)^T; every hit
        expert's weights are read once, the rows are shared among them.
        """
        experts, top_k = self._experts, self._top_k
        active = experts * (1.0 - (1.0 - top_k / experts) ** tokens)
        rows = float(tokens * top_k)
        flops = 2.0 * rows * n * k
        moved_bytes = (rows * k + active * k * n + rows * n) * self._dtype_bytes
        eff = self._moe_eff  # fused-MoE kernels reach a fraction of a dense GEMM's rates
        return self._kernel_s(self._gemm_launch_s, flops / (self._gemm_flops_per_s * eff), moved_bytes / (self._gemm_bytes_per_s * eff))

    def _expected_active_experts(self, tokens: int) -> float:
        if self._router_gemm is None:
            return 1.0
        return self._experts * (1.0 - (1.0 - self._top_k / self._experts) ** tokens)

    def _per_token_parts(self, tokens: int) -> tuple[float, float, float]:
        """(GEMM, elementwise, communication) seconds of a step with `tokens` new tokens."""
        parts = self._per_token_cache.get(tokens)
        if parts is not None:
            return parts
        layer_gemm_s = sum(self._gemm_s(tokens, n, k) for n, k in self._attn_gemms)
        if self._router_gemm is None:
            layer_gemm_s += sum(self._gemm_s(tokens, n, k) for n, k in self._mlp_gemms)
        else:
            layer_gemm_s += self._gemm_s(tokens, *self._router_gemm)
            layer_gemm_s += sum(self._moe_gemm_s(tokens, n, k) for n, k in self._mlp_gemms)
        layer_elem_s = sum(self._elem_s(tokens * b) for b in self._elem_bytes_per_token)
        head_elem_s = sum(self._elem_s(tokens * b) for b in self._head_elem_bytes_per_token)
        allreduce_s = self._allreduce_latency_s + tokens * self._hidden * self._dtype_bytes * self._allreduce_s_per_byte
        parts = (
            self._layers * layer_gemm_s,
            self._layers * layer_elem_s + head_elem_s,
            self._num_allreduces * allreduce_s,
        )
        self._per_token_cache[tokens] = parts
        return parts

    def _lm_head_s(self, seqs: int) -> float:
        return self._gemm_s(seqs, self._vocab_shard, self._hidden)

    def _prefill_attention_s(self, chunks: tuple[int, ...], prefixes: tuple[int, ...]) -> float:
        """One layer's causal flash attention over all prefill chunks (one varlen launch)."""
        if not prefixes:
            prefixes = (0,) * len(chunks)
        pairs = 0.0  # query-key pairs: chunk c over prefix p attends p + (1..c) keys
        chunk_tokens = prefix_tokens = 0
        for c, p in zip(chunks, prefixes, strict=True):
            pairs += c * (p + (c + 1) / 2.0)
            chunk_tokens += c
            prefix_tokens += p
        flops = self._attn_flops_per_pair * pairs
        moved_bytes = (
            chunk_tokens * self._q_bytes_per_token
            + (prefix_tokens + chunk_tokens) * self._kv_bytes_per_token_layer
        )
        return self._kernel_s(self._launch_s, flops / self._attn_flops_per_s, moved_bytes / self._attn_bytes_per_s)

    def _decode_attention_s(self, seqs: int, context_sum_tokens: int) -> float:
        """One layer's decode attention: streams every sequence's cached K and V once.

        Split-KV decoding spreads even one long sequence over all SMs, so only the summed context
        matters here; the max context is not needed by this model. The formula is
        `_decode_step_formula`'s with no fixed part and one layer (0.0 + 1 x t is t, bit for bit).
        """
        fn = self._decode_attention_cache.get(seqs)
        if fn is None:
            fn = self._decode_attention_cache[seqs] = self._decode_step_formula(seqs, 0.0, 1)
        return fn(context_sum_tokens, 0)

    def _decode_step_formula(self, seqs: int, fixed_s: float, layers: int):
        """fixed_s + layers x one layer's decode attention of `seqs` sequences, as a function of
        (context sum, context max): launch + smooth_max(FLOPs / rate, bytes / rate), at least the
        kernel floor (`_kernel_s`, `smooth_max` inlined, their operations in the same order), with
        every constant of `seqs` bound once. Single steps (step-by-step mode, mixed steps) call it
        once each: 0.63 us a call, against 2.1 us when it was a one-step run of the run pricer
        (2026-12-05, micro-benchmark). The run pricer (`decode_run_fn`) performs the same
        operations in roofline_run.py's loop."""
        kv_bytes, q_bytes = self._kv_bytes_per_token_layer, seqs * self._q_bytes_per_token
        flops_per_token, flops_per_s, bytes_per_s = self._attn_flops_per_pair, self._attn_flops_per_s, self._attn_bytes_per_s
        launch_s, floor_s, p = self._launch_s, self._floor_s, self._p
        roof = smooth_max_2 if p == 2.0 else (lambda c, m: smooth_max(c, m, p))  # smooth_max's own p = 2 path

        def fn(context_sum_tokens: int, context_max_tokens: int) -> float:
            t = launch_s + roof(context_sum_tokens * flops_per_token / flops_per_s, (context_sum_tokens * kv_bytes + q_bytes) / bytes_per_s)
            return fixed_s + layers * (t if t > floor_s else floor_s)
        return fn

    def decode_run_fn(self, decode_seqs: int):
        """The decode-run pricer of costmodel/decode_run.py for `decode_seqs` sequences: the step
        formula above in one loop (roofline_run.py: no call per step; run by Python, then
        compiled by numba once enough steps are priced), the same bits as the step function
        (tests/test_costmodel.py and tests/test_roofline_run.py, check_run_pricer).
        None for no sequences, or at a roofline p other than 2 (no shipped profile has one): then
        decode_run.py loops over the step function, with the same results."""
        if decode_seqs <= 0 or self._p != 2.0:
            return None
        return self._run_pricers.get(decode_seqs)

    def _run_constants(self, seqs: int) -> tuple[float, ...]:
        """The constants of `seqs` sequences' decode step, in roofline_run.roofline_decode_run's order."""
        return tuple(float(x) for x in (
            self._decode_fixed_s(seqs), self._layers, seqs, self._attn_flops_per_pair, self._attn_flops_per_s,
            self._kv_bytes_per_token_layer, seqs * self._q_bytes_per_token, self._attn_bytes_per_s, self._launch_s,
            self._floor_s))

    # ----- CostModel interface -----

    def swap_time_s(self, num_bytes_per_gpu: float) -> float:
        return num_bytes_per_gpu / self._host_link_bytes_per_s

    # ----- diagnostics -----

    def floors(self, shape: BatchShape) -> dict[str, float]:
        """Physical lower bounds of one step on one GPU, at spec peaks (no efficiency factors).

        bandwidth_floor_s: weights read (every layer, the LM head, the experts hit) plus KV read,
        over peak HBM bandwidth. flop_floor_s: 2 x active matmul parameters x tokens (LM head on
        sequences) plus attention FLOPs, over peak FLOP/s. Model FLOPs utilisation of a prediction
        is flop_floor_s / step_time_s; bandwidth efficiency is bandwidth_floor_s / step_time_s.
        """
        chunks, decode_seqs = shape.prefill_chunk_tokens, shape.decode_seqs
        tokens, seqs = sum(chunks) + decode_seqs, len(chunks) + decode_seqs
        prefixes = shape.prefill_prefix_tokens or (0,) * len(chunks)
        dt, layers = self._dtype_bytes, self._layers

        attn_params = sum(n * k for n, k in self._attn_gemms)
        expert_params = sum(n * k for n, k in self._mlp_gemms)
        router_params = self._router_gemm[0] * self._router_gemm[1] if self._router_gemm else 0
        lm_head_params = self._vocab_shard * self._hidden
        active_experts = min(self._expected_active_experts(tokens), float(self._experts))
        weights_read = layers * (attn_params + router_params + active_experts * expert_params) + lm_head_params
        weight_bytes = weights_read * dt

        kv_tokens = shape.decode_context_sum_tokens + sum(prefixes) + sum(chunks)
        kv_bytes = layers * kv_tokens * self._kv_bytes_per_token_layer

        pairs = sum(c * (p + (c + 1) / 2.0) for c, p in zip(chunks, prefixes, strict=True))
        attn_flops = layers * self._attn_flops_per_pair * (pairs + shape.decode_context_sum_tokens)
        matmul_per_token = layers * (attn_params + router_params + self._top_k * expert_params)
        flops = 2.0 * matmul_per_token * tokens + 2.0 * lm_head_params * seqs + attn_flops

        bandwidth_floor_s = (weight_bytes + kv_bytes) / self._hbm_bytes_per_s if tokens else 0.0
        flop_floor_s = flops / self._peak_flops_per_s
        return {
            "weight_bytes_per_gpu": float(weight_bytes) if tokens else 0.0,
            "kv_bytes_per_gpu": float(kv_bytes),
            "flops_per_gpu": float(flops),
            "bandwidth_floor_s": bandwidth_floor_s,
            "flop_floor_s": flop_floor_s,
            "floor_s": max(bandwidth_floor_s, flop_floor_s),
        }
