"""Table cost model: one engine iteration's wall time (seconds) from a measured schema-2 profile.

The decomposition is docs/cost-model.md §1, the same as analytic.py, but each kernel is read from
the profile's tables instead of a roofline:

- GEMMs: per (n, k) shape after TP sharding, the measured time-vs-tokens table interpolated
  log-log (`_numeric.TimeCurve`: flat below the smallest measured token count, growing in
  proportion to tokens above the largest, i.e. constant achieved TFLOP/s). A shape without a
  table reads the generic TFLOP/s surface (`surface_curve`). MoE experts: the expected number
  of experts hit, each on its share of the T x top-k rows (fractional rows interpolate), divided
  by `efficiency.moe_gemm_efficiency` (grouped GEMMs against dense ones; calibration measures it).
- Attention: the per-head-configuration fits (PrefillAttentionFit, DecodeAttentionFit); a
  configuration that was not measured borrows the closest measured one (same head_dim first),
  which is sound because the fits are on FLOPs and bytes, not on head counts. Bytes are counted
  in the measured dtype (attention.dtype_bytes), as the fits were. Prefill chunks are one varlen
  launch, decode sequences another. A profile with GEMM tables but no attention fits (imported
  from a source that publishes none, `llmsim import-profile`) prices attention with the analytic
  model (spec peaks x efficiency); `attention_config` is then None.
- Elementwise kernels: bytes moved over the measured bandwidth table, at least the kernel floor;
  efficiency x HBM peak when the profile has no elementwise table.
- All-reduce (TP > 1): the measured table for that TP degree, else the ring formula with the
  profile's per-TP fit (`comm.allreduce_by_tp`) or its comm scalars (roofline.allreduce_params).
- Pipeline parallel (PP > 1): layers are split into stages and one step carries one micro-batch
  through every stage in turn, so its time is the sum over stages (= all layers) plus PP - 1
  activation sends of tokens x hidden x dtype bytes over the interconnect (one direction, half
  the bidirectional total), each with the all-reduce latency as its launch cost. Overlap of
  several micro-batches is not modelled.
- Swap: bytes over the slower measured host-link direction (hardware.host_link_gb_per_s without
  a host_link table). Engine overheads from `overheads` (a preset, composed.py), sampling priced
  as an elementwise kernel.

Everything is turned into numpy arrays / curves at construction; parts that depend only on the
token count or the sequence count are cached per integer, so a decode-only call is two dict
lookups and a few float operations.
"""

from __future__ import annotations

import math

import numpy as np

from llmsim.costmodel import _attention as feat
from llmsim.costmodel._numeric import TimeCurve
from llmsim.costmodel.analytic import AnalyticCostModel
from llmsim.costmodel.base import BatchShape, CostModel
from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.composed import ComposedCostModel
from llmsim.costmodel.profile import AttentionConfig, GemmSurface, HardwareProfile
from llmsim.costmodel.roofline import DEFAULT_MOE_GEMM_EFFICIENCY, allreduce_params
from llmsim.errors import LlmsimError



def surface_curve(surface: GemmSurface, n: int, k: int) -> TimeCurve:
    """The time-vs-tokens curve the generic surface gives an (n, k) GEMM.

    log TFLOP/s is interpolated linearly in log N*K and held constant beyond the grid (time then
    grows in proportion to N*K); the result is read over the grid's token counts like a measured
    table.
    """
    tokens = np.asarray(surface.tokens)
    log_nk = np.log(np.asarray(surface.nk))
    log_tflops = np.log(np.asarray(surface.tflops))  # [tokens, nk]
    nk = float(n) * float(k)
    rate_flops_per_s = np.exp([np.interp(np.log(nk), log_nk, row) for row in log_tflops]) * 1e12
    return TimeCurve(tokens, 2.0 * tokens * nk / rate_flops_per_s)


def closest_attention_config(configs: tuple[AttentionConfig, ...], q_heads: int, kv_heads: int, head_dim: int) -> AttentionConfig:
    """The exact configuration if measured, else the nearest: same head_dim first, then by
    log-distance in query and KV head counts. Only configurations with both fits qualify."""
    usable = [c for c in configs if c.prefill is not None and c.decode is not None]
    if not usable:
        raise LlmsimError("the profile's attention section has no configuration with both prefill and decode fits")

    def distance(c: AttentionConfig) -> tuple[bool, float]:
        return (c.head_dim != head_dim, abs(math.log(c.q_heads / q_heads)) + abs(math.log(c.kv_heads / kv_heads)))

    return min(usable, key=distance)


def has_gemm_tables(profile: HardwareProfile) -> bool:
    """True when the profile holds measured GEMM tables, the least a TableCostModel needs."""
    return profile.gemm is not None and bool(profile.gemm.shapes)


class TableCostModel(ComposedCostModel):
    """CostModel from a model architecture, a measured (schema-2) profile, TP and PP degrees."""

    def __init__(self, model: ModelArch, profile: HardwareProfile, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> None:
        if not has_gemm_tables(profile):
            raise LlmsimError(
                f"hardware profile '{profile.hardware.name}' has no measured GEMM tables "
                "(schema 2, from llmsim calibrate-hardware or import-profile); use cost_model_for() to fall back to the analytic model"
            )
        model.check_tensor_parallel(tensor_parallel)
        layers = model.num_hidden_layers
        if not 1 <= pipeline_parallel <= layers:
            raise LlmsimError(f"pipeline_parallel={pipeline_parallel} must be between 1 and the {layers} layers of {model.name}")
        self.model, self.profile = model, profile
        self.tensor_parallel = tp = tensor_parallel
        self.pipeline_parallel = pp = pipeline_parallel
        self._analytic = AnalyticCostModel(model, profile, tp)  # physical floors, shared definitions
        self._layers = layers
        self.stage_layers = tuple(layers // pp + (1 if s < layers % pp else 0) for s in range(pp))
        self._dtype_bytes = model.dtype_bytes
        hidden, head_dim = model.hidden_size, model.head_dim
        q_heads, kv_heads = model.q_heads_per_gpu(tp), model.kv_heads_per_gpu(tp)
        q_dim, kv_dim = q_heads * head_dim, kv_heads * head_dim
        inter = -(-model.intermediate_size // tp)
        self._hidden = hidden
        self._experts, self._top_k = model.num_experts, model.experts_per_token
        # grouped (fused-MoE) GEMMs against dense GEMMs of the same shapes: measured by calibration
        # (fit_moe.py) or the analytic default
        eff = profile.efficiency.moe_gemm_efficiency
        self._moe_efficiency = DEFAULT_MOE_GEMM_EFFICIENCY if eff is None else eff
        self._init_gemms(model, profile, tp, q_dim, kv_dim, inter)
        self._init_elementwise(profile, q_dim, kv_dim, inter)
        self._init_attention(profile, q_heads, kv_heads, head_dim)
        self._init_comm(profile, tp)
        self._init_caches()

    def _init_gemms(self, model: ModelArch, profile: HardwareProfile, tp: int, q_dim: int, kv_dim: int, inter: int) -> None:
        """GEMM curves, one per per-GPU shape (n, k): the measured table, else the generic surface
        (the shape is then listed in `unmeasured_gemm_shapes`)."""
        hidden = self._hidden
        measured = {(t.n, t.k): TimeCurve(t.tokens, t.seconds) for t in profile.gemm.shapes}  # type: ignore[union-attr]
        surface = profile.gemm.surface  # type: ignore[union-attr]
        self.unmeasured_gemm_shapes: list[tuple[int, int]] = []

        def curve(n: int, k: int) -> TimeCurve:
            if (n, k) in measured:
                return measured[(n, k)]
            if surface is None:
                raise LlmsimError(f"profile '{profile.hardware.name}' has no GEMM table for n={n} k={k} and no generic surface")
            self.unmeasured_gemm_shapes.append((n, k))
            return surface_curve(surface, n, k)

        self._attn_gemms = [curve(q_dim + 2 * kv_dim, hidden), curve(hidden, q_dim)]
        self._mlp_gemms = [curve(2 * inter, hidden), curve(hidden, inter)]
        self._router = curve(model.num_local_experts, hidden) if model.is_moe else None  # type: ignore[arg-type]
        self._lm_head = curve(-(-model.vocab_size // tp), hidden)

    def _init_elementwise(self, profile: HardwareProfile, q_dim: int, kv_dim: int, inter: int) -> None:
        """Elementwise kernels: bytes per token of each (the same kernels as analytic.py), the
        measured bandwidth curve and kernel floor (s), else efficiency x HBM peak."""
        hw, eff = profile.hardware, profile.efficiency
        hidden, dt = self._hidden, self._dtype_bytes
        self._elem_bytes_per_token = (4 * hidden * dt, 4 * hidden * dt, 2 * (q_dim + kv_dim) * dt, 3 * inter * dt * self._top_k, 4 * kv_dim * dt)
        self._head_elem_bytes_per_token = (2 * hidden * dt, 4 * hidden * dt)
        if profile.elementwise is not None:
            self._floor_s = profile.elementwise.floor_us * 1e-6
            ew = profile.elementwise
            self._elem_curve: TimeCurve | None = TimeCurve(ew.num_bytes, [b / (g * 1e9) for b, g in zip(ew.num_bytes, ew.gb_per_s, strict=True)])
        else:
            self._floor_s = eff.kernel_floor_us * 1e-6
            self._elem_curve = None
        self._elem_bytes_per_s = hw.hbm_gb_per_s * 1e9 * eff.elementwise_bandwidth

    def _init_attention(self, profile: HardwareProfile, q_heads: int, kv_heads: int, head_dim: int) -> None:
        """Attention fits for this per-GPU head configuration (the closest measured one), or the
        analytic model's attention when the profile has no usable fit."""
        att = profile.attention
        if att is None or not any(c.prefill is not None and c.decode is not None for c in att.configs):
            self.attention_config, self.attention_config_exact = None, False
            # Instance attributes shadow the two hooks, so the hot decode path pays no extra test.
            self._prefill_attention_s = self._analytic._prefill_attention_s  # type: ignore[method-assign]
            self._decode_attention_s = self._analytic._decode_attention_s  # type: ignore[method-assign]
            return
        cfg = closest_attention_config(att.configs, q_heads, kv_heads, head_dim)  # type: ignore[union-attr]
        self.attention_config = (cfg.q_heads, cfg.kv_heads, cfg.head_dim)
        self.attention_config_exact = self.attention_config == (q_heads, kv_heads, head_dim)
        pf, df = cfg.prefill, cfg.decode
        self._pf = (pf.launch_s, pf.s_per_flop, pf.s_per_byte)  # type: ignore[union-attr]
        self._q_heads, self._kv_heads, self._head_dim = q_heads, kv_heads, head_dim
        # Features in the measured dtype (as the fits were made): the tables describe the kernels
        # that were timed, like the GEMM tables (a CPU profile measures float32).
        self._attn_dtype_bytes = att_dt = att.dtype_bytes  # type: ignore[union-attr]
        self._flops_per_pair = feat.prefill_flops_per_pair(q_heads, head_dim)
        self._dec_launch_s = df.launch_s  # type: ignore[union-attr]
        self._dec_s_per_seq = df.s_per_seq  # type: ignore[union-attr]
        # Seconds per context token in one layer: KV bytes per token x seconds per byte.
        self._dec_s_per_ctx = df.s_per_byte * feat.kv_bytes_per_token(kv_heads, head_dim, att_dt)  # type: ignore[union-attr]

    def _init_comm(self, profile: HardwareProfile, tp: int) -> None:
        """Communication: all-reduces (2 per layer + the vocab-parallel embedding), PP sends over the
        interconnect (one direction), and host-link swaps."""
        hw = profile.hardware
        self._num_allreduces = 2 * self._layers + 1 if tp > 1 else 0
        tables = {t.tp: t for t in profile.comm.allreduce_tables or ()}
        self._allreduce_curve = TimeCurve(tables[tp].num_bytes, tables[tp].seconds) if tp in tables else None
        self._allreduce_latency_s, self._allreduce_s_per_byte = allreduce_params(profile.comm, tp)
        self._send_s_per_byte = 1.0 / (hw.interconnect_gb_per_s / 2.0 * 1e9)
        hl = profile.host_link
        self._host_bytes_per_s = (min(hl.h2d_gb_per_s, hl.d2h_gb_per_s) if hl else hw.host_link_gb_per_s) * 1e9

    def __repr__(self) -> str:
        return (
            f"TableCostModel({self.model.name}, {self.profile.hardware.name}, "
            f"tensor_parallel={self.tensor_parallel}, pipeline_parallel={self.pipeline_parallel})"
        )

    # ----- parts -----

    def _elem_s(self, num_bytes: float) -> float:
        t = self._elem_curve(num_bytes) if self._elem_curve is not None else num_bytes / self._elem_bytes_per_s
        return t if t > self._floor_s else self._floor_s

    def _moe_s(self, c: TimeCurve, tokens: int) -> float:
        active = self._experts * (1.0 - (1.0 - self._top_k / self._experts) ** tokens)
        return active * c(tokens * self._top_k / active) / self._moe_efficiency

    def _allreduce_s(self, num_bytes: float) -> float:
        if self._allreduce_curve is not None:
            return self._allreduce_curve(num_bytes)
        return self._allreduce_latency_s + num_bytes * self._allreduce_s_per_byte

    def _per_token_parts(self, tokens: int) -> tuple[float, float, float]:
        """(GEMM, elementwise, communication) seconds of a step with `tokens` new tokens."""
        parts = self._per_token_cache.get(tokens)
        if parts is not None:
            return parts
        layer_gemm_s = sum(c(tokens) for c in self._attn_gemms)
        if self._router is None:
            layer_gemm_s += sum(c(tokens) for c in self._mlp_gemms)
        else:
            layer_gemm_s += self._router(tokens) + sum(self._moe_s(c, tokens) for c in self._mlp_gemms)
        layer_elem_s = sum(self._elem_s(tokens * b) for b in self._elem_bytes_per_token)
        head_elem_s = sum(self._elem_s(tokens * b) for b in self._head_elem_bytes_per_token)
        activation_bytes = tokens * self._hidden * self._dtype_bytes
        comm_s = self._num_allreduces * self._allreduce_s(activation_bytes) if self._num_allreduces else 0.0
        if self.pipeline_parallel > 1:
            comm_s += (self.pipeline_parallel - 1) * (self._allreduce_latency_s + activation_bytes * self._send_s_per_byte)
        parts = (self._layers * layer_gemm_s, self._layers * layer_elem_s + head_elem_s, comm_s)
        self._per_token_cache[tokens] = parts
        return parts

    def _lm_head_s(self, seqs: int) -> float:
        return self._lm_head(seqs)

    def _prefill_attention_s(self, chunks: tuple[int, ...], prefixes: tuple[int, ...]) -> float:
        """One layer's prefill attention: all chunks in one varlen launch."""
        if not prefixes:
            prefixes = (0,) * len(chunks)
        pairs = 0.0
        query_tokens = key_tokens = 0
        for c, p in zip(chunks, prefixes, strict=True):
            pairs += feat.prefill_pairs(c, p)
            query_tokens += c
            key_tokens += p + c
        launch_s, s_per_flop, s_per_byte = self._pf
        moved = feat.prefill_bytes(query_tokens, key_tokens, self._q_heads, self._kv_heads, self._head_dim, self._attn_dtype_bytes)
        t = launch_s + s_per_flop * self._flops_per_pair * pairs + s_per_byte * moved
        return t if t > self._floor_s else self._floor_s

    def _decode_attention_s(self, seqs: int, context_sum_tokens: int) -> float:
        t = self._dec_launch_s + self._dec_s_per_seq * seqs + self._dec_s_per_ctx * context_sum_tokens
        return t if t > self._floor_s else self._floor_s

    # ----- CostModel interface -----

    def swap_time_s(self, num_bytes_per_gpu: float) -> float:
        return num_bytes_per_gpu / self._host_bytes_per_s

    # ----- diagnostics -----

    def floors(self, shape: BatchShape) -> dict[str, float]:
        """Physical lower bounds at spec peaks, as AnalyticCostModel.floors (pipeline sends excluded)."""
        return self._analytic.floors(shape)


def cost_model_for(model: ModelArch, profile: HardwareProfile, tp: int = 1, pp: int = 1) -> CostModel:
    """A TableCostModel when the profile has measured GEMM tables, otherwise the
    AnalyticCostModel (spec peaks x efficiency factors), which has no pipeline-parallel model."""
    if has_gemm_tables(profile):
        return TableCostModel(model, profile, tp, pp)
    if pp != 1:
        raise LlmsimError(
            f"pipeline_parallel={pp} needs a measured hardware profile with tables (llmsim calibrate-hardware); "
            f"'{profile.hardware.name}' is {profile.calibration.fidelity} and the analytic model has no pipeline stages"
        )
    return AnalyticCostModel(model, profile, tp)
