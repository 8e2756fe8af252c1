"""Hardware profiles: model-agnostic data about one GPU, with provenance.

A profile is a YAML file (schema in docs/cost-model.md §2) validated into `HardwareProfile`.
Units are in the field names: GiB for memory, TFLOP/s and GB/s (1e9 bytes/s) for spec peaks and
achieved rates, microseconds (`_us`) for latencies and kernel floors, seconds (`_s`, `seconds`)
for measured times and engine overheads, bytes for sizes. Efficiency factors are dimensionless
fractions of the spec peaks; relative errors are fractions (0.02 = 2%).

Schema versions:
- 1: spec peaks, efficiency factors, communication defaults and overheads (analytic profiles).
- 2: adds optional measured sections written by `llmsim calibrate-hardware` (llmsim.costmodel.fit):
  `gemm`, `attention`, `elementwise`, `host_link`, `comm.allreduce_tables`, `validation`,
  `fit_report`, and calibration provenance (`timer`, `repetitions`, `dtype`). Every section
  defaults to None, so a version-1 file stays valid; `efficiency` stays the fallback for anything a
  table does not cover. llmsim.costmodel.tables.TableCostModel consumes the tables.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmsim.costmodel.overheads import PRESETS, EngineOverheads, resolve

# A repository checkout keeps profiles at the top level; an installed wheel carries a copy.
REPO_PROFILES_DIR = Path(__file__).resolve().parents[2] / "hardware_profiles"
PACKAGED_PROFILES_DIR = Path(__file__).resolve().parents[1] / "_data" / "hardware_profiles"

_Fraction = Field(gt=0.0, le=1.0)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HardwareSpec(_Section):
    """Spec-sheet facts about the device."""

    name: str  # canonical profile name, e.g. a100-80g-sxm
    device_name: str  # as torch.cuda.get_device_name() reports it
    memory_gib: float = Field(gt=0)
    sm_count: int = Field(gt=0)
    peak_bf16_tflops: float = Field(gt=0)  # dense (no 2:4 sparsity)
    hbm_gb_per_s: float = Field(gt=0)
    host_link_gb_per_s: float = Field(gt=0)  # host<->device copy rate used to price KV swap
    interconnect_gb_per_s: float = Field(gt=0)  # GPU<->GPU (NVLink), bidirectional total


class Calibration(_Section):
    """How the profile was made."""

    # measured-public: tables imported from published measurements (llmsim import-profile), not this machine
    fidelity: Literal["measured", "measured-public", "analytic", "coarse-cpu"]
    date: datetime.date
    source: str
    notes: str = ""
    # Filled by a measured calibration run.
    torch_version: str | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    attention_backends: tuple[str, ...] | None = None
    duration_s: float | None = Field(default=None, ge=0)
    timer: str | None = None  # e.g. "cuda events, median of 50 after 10 warm-up"
    repetitions: int | None = Field(default=None, ge=0)  # timed launches per point
    dtype: str | None = None  # dtype of the measured kernels, e.g. bfloat16


class Efficiency(_Section):
    """Achieved fractions of spec peaks used by the analytic model, and the smallest kernel time."""

    gemm_compute: float = _Fraction  # of peak_bf16_tflops, compute-bound GEMMs
    gemm_bandwidth: float = _Fraction  # of hbm_gb_per_s, memory-bound GEMMs (weight streaming)
    attention_prefill_compute: float = _Fraction  # of peak_bf16_tflops, flash attention forward
    attention_decode_bandwidth: float = _Fraction  # of hbm_gb_per_s, paged decode attention
    elementwise_bandwidth: float = _Fraction  # of hbm_gb_per_s, norms / rotary / activation
    kernel_floor_us: float = Field(ge=0)  # no kernel is faster than this
    # Optional (None: the defaults of llmsim.costmodel.analytic, which cite their sources).
    kernel_launch_us: float | None = Field(default=None, ge=0)  # added to every non-GEMM kernel
    gemm_launch_us: float | None = Field(default=None, ge=0)  # added to every GEMM
    roofline_p: float | None = Field(default=None, ge=1)  # p-norm blend of compute and memory time; inf = max()
    moe_gemm_efficiency: float | None = Field(default=None, gt=0.0, le=1.0)  # fused-MoE rate / dense GEMM rate


class FitQuality(_Section):
    """How well a fitted or smoothed table reproduces its own measured points (fractions)."""

    points: int = Field(ge=0)
    median_rel_error: float = Field(ge=0)
    worst_rel_error: float = Field(ge=0)


def _check_table(name: str, xs: Sequence[float], ys: Sequence[float]) -> None:
    """A 1-D table: same lengths, at least one point, x strictly increasing and positive, y > 0."""
    if len(xs) != len(ys):
        raise ValueError(f"{name}: {len(xs)} abscissae but {len(ys)} values")
    if not xs:
        raise ValueError(f"{name}: needs at least one point")
    if xs[0] <= 0 or any(b <= a for a, b in zip(xs, xs[1:])):
        raise ValueError(f"{name}: abscissae must be positive and strictly increasing")
    if any(not y > 0 for y in ys):
        raise ValueError(f"{name}: values must be positive")


class AllReduceTable(_Section):
    """Measured all-reduce at one TP degree: time vs message bytes per GPU, and its ring fit.

    Fit: seconds = latency_us x 1e-6 + 2 (tp - 1) / tp x num_bytes / (bus_gb_per_s x 1e9).
    """

    tp: int = Field(ge=2)
    num_bytes: tuple[float, ...]  # message size per GPU, strictly increasing
    seconds: tuple[float, ...]
    latency_us: float = Field(ge=0)
    bus_gb_per_s: float = Field(gt=0)
    fit: FitQuality | None = None

    @model_validator(mode="after")
    def _check(self) -> AllReduceTable:
        _check_table(f"allreduce table tp={self.tp}", self.num_bytes, self.seconds)
        return self


class AllReduceFit(_Section):
    """All-reduce at one TP degree: seconds = latency_us x 1e-6 + 2 (tp - 1) / tp x bytes / (bus_gb_per_s x 1e9)."""

    tp: int = Field(ge=2)
    latency_us: float = Field(ge=0)
    bus_gb_per_s: float = Field(gt=0)


class Comm(_Section):
    """Tensor-parallel all-reduce: time = latency + 2 (tp - 1) / tp x bytes / bus bandwidth.

    `allreduce_tables` (schema 2) holds measured times per TP degree; a TP degree without a table
    uses the two scalar fields.
    """

    allreduce_latency_us: float = Field(ge=0)
    allreduce_bus_gb_per_s: float = Field(gt=0)
    measured: bool = False  # False: documented defaults, not measured on this machine
    notes: str = ""
    allreduce_tables: tuple[AllReduceTable, ...] | None = None
    # Optional latency and bus bandwidth per TP degree (fits to measured curves); else the scalars above.
    allreduce_by_tp: tuple[AllReduceFit, ...] | None = None

    @model_validator(mode="after")
    def _check_by_tp(self) -> Comm:
        degrees = [f.tp for f in self.allreduce_by_tp or ()]
        if len(set(degrees)) != len(degrees):
            raise ValueError(f"allreduce_by_tp: each TP degree at most once, got {degrees}")
        return self


class Overheads(_Section):
    """Engine time outside kernels (costmodel/overheads.py): a preset (default cuda-graph), numbers override it."""

    preset: str | None = None  # cuda-graph, eager, kernels-only
    step_s: float | None = Field(default=None, ge=0)
    per_seq_s: float | None = Field(default=None, ge=0)
    sampling_bytes_per_logit: float | None = Field(default=None, ge=0)  # fp32 logits moved per vocab entry

    @model_validator(mode="after")
    def _check_preset(self) -> Overheads:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset '{self.preset}' is not one of {', '.join(sorted(PRESETS))}")
        return self

    def resolved(self) -> EngineOverheads:
        """The preset's numbers with the ones given here replacing them."""
        return resolve(self.preset, self.step_s, self.per_seq_s, self.sampling_bytes_per_logit)


# ----- schema 2: measured tables -----


class GemmTable(_Section):
    """Measured time of one GEMM (tokens x k) @ (k x n) vs the token count, per GPU (n, k sharded).

    `seconds` are the fitted (median-of-duplicates, made non-decreasing) times at `tokens`; `fit`
    compares them with the raw measured points.
    """

    n: int = Field(gt=0)  # output features
    k: int = Field(gt=0)  # input features
    tokens: tuple[int, ...]  # rows M, strictly increasing
    seconds: tuple[float, ...]
    fit: FitQuality | None = None

    @model_validator(mode="after")
    def _check(self) -> GemmTable:
        _check_table(f"gemm table n={self.n} k={self.k}", self.tokens, self.seconds)
        return self


class GemmSurface(_Section):
    """Achieved TFLOP/s over a log-spaced grid of (token count, N*K), for shapes without a table.

    tflops[i][j] is the rate at tokens[i] and nk[j]; a GEMM's time is 2 x tokens x N x K / rate.
    """

    tokens: tuple[float, ...]  # strictly increasing
    nk: tuple[float, ...]  # N*K (weight elements), strictly increasing
    tflops: tuple[tuple[float, ...], ...]
    fit: FitQuality | None = None  # the surface against every measured GEMM point

    @model_validator(mode="after")
    def _check(self) -> GemmSurface:
        _check_table("gemm surface tokens", self.tokens, [1.0] * len(self.tokens))
        _check_table("gemm surface nk", self.nk, [1.0] * len(self.nk))
        if len(self.tflops) != len(self.tokens) or any(len(row) != len(self.nk) for row in self.tflops):
            raise ValueError("gemm surface: tflops must have one row per token count and one column per nk")
        if any(not v > 0 for row in self.tflops for v in row):
            raise ValueError("gemm surface: tflops must be positive")
        return self


class GemmSection(_Section):
    shapes: tuple[GemmTable, ...] = ()
    surface: GemmSurface | None = None


class PrefillAttentionFit(_Section):
    """One layer's prefill attention launch, non-negative least squares on physical features:

    seconds = launch_s + s_per_flop x flops + s_per_byte x bytes, where
    flops = 4 x query-key pairs x q_heads x head_dim (QK^T and PV; a chunk c over prefix p has
    c x (p + (c + 1) / 2) causal pairs) and bytes = (2 x query tokens x q_heads + 2 x key tokens x
    kv_heads) x head_dim x dtype_bytes (read Q, write O, read K and V once).
    """

    launch_s: float = Field(ge=0)
    s_per_flop: float = Field(ge=0)
    s_per_byte: float = Field(ge=0)
    fit: FitQuality


class DecodeAttentionFit(_Section):
    """One layer's decode attention launch (one query token per sequence):

    seconds = launch_s + s_per_seq x batch + s_per_byte x kv bytes, where kv bytes = sum over
    sequences of context tokens x 2 x kv_heads x head_dim x dtype_bytes (K and V streamed once).
    1 / s_per_byte is the achieved KV bandwidth in bytes/s.
    """

    launch_s: float = Field(ge=0)
    s_per_seq: float = Field(ge=0)
    s_per_byte: float = Field(ge=0)
    fit: FitQuality


class PrefillPoint(_Section):
    chunk_tokens: int = Field(gt=0)  # query tokens per sequence
    prefix_tokens: int = Field(ge=0)  # cached tokens before the chunk (lower-right causal when > 0)
    batch: int = Field(gt=0)  # sequences in the launch
    seconds: float = Field(gt=0)


class DecodePoint(_Section):
    batch: int = Field(gt=0)
    context_tokens: int = Field(gt=0)  # KV length of every sequence
    seconds: float = Field(gt=0)


class AttentionConfig(_Section):
    """Fits and measured points for one per-GPU head configuration (after TP sharding)."""

    q_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    prefill: PrefillAttentionFit | None = None
    decode: DecodeAttentionFit | None = None
    prefill_points: tuple[PrefillPoint, ...] = ()  # fresh prompts (prefix 0)
    chunked_prefill_points: tuple[PrefillPoint, ...] = ()  # prefix > 0, lower-right causal
    decode_points: tuple[DecodePoint, ...] = ()


class AttentionSection(_Section):
    dtype_bytes: int = Field(gt=0)  # bytes per Q/K/V element in the measurements (and the fits)
    backends: tuple[str, ...] = ()  # e.g. ("sdpa-flash", "flash_attn_with_kvcache")
    configs: tuple[AttentionConfig, ...] = ()


class ElementwiseSection(_Section):
    """Achieved bandwidth of a memory-bound kernel vs bytes moved (read + written), and a floor.

    A kernel moving b bytes takes max(floor, b / bandwidth(b)), bandwidth interpolated log-log.
    """

    num_bytes: tuple[float, ...]  # strictly increasing
    gb_per_s: tuple[float, ...]
    floor_us: float = Field(ge=0)  # the shortest kernel, launch gap included
    fit: FitQuality | None = None

    @model_validator(mode="after")
    def _check(self) -> ElementwiseSection:
        _check_table("elementwise", self.num_bytes, self.gb_per_s)
        return self


class HostLinkSection(_Section):
    """Measured pinned host<->device copies: seconds = latency + bytes / rate, per direction."""

    h2d_gb_per_s: float = Field(gt=0)
    d2h_gb_per_s: float = Field(gt=0)
    latency_us: float = Field(default=0.0, ge=0)
    h2d_fit: FitQuality | None = None
    d2h_fit: FitQuality | None = None


class ValidationCheck(_Section):
    """A composite check made at the end of calibration: a prediction against a measurement or bound."""

    name: str
    passed: bool
    skipped: bool = False  # not applicable to this profile (e.g. GPU spec peaks on a CPU run)
    predicted_s: float | None = None
    measured_s: float | None = None
    bound_s: float | None = None
    detail: str = ""


class FitReportEntry(_Section):
    table: str  # e.g. "gemm n=12288 k=4096", "attention prefill 32/32/128"
    points: int = Field(ge=0)
    median_rel_error: float = Field(ge=0)
    worst_rel_error: float = Field(ge=0)


_V2_SECTIONS = ("gemm", "attention", "elementwise", "host_link", "validation", "fit_report")


class HardwareProfile(_Section):
    """One GPU: spec, provenance, analytic efficiency factors, communication and overheads.

    Schema 2 adds the optional measured tables; they need `schema_version: 2`.
    """

    schema_version: Literal[1, 2] = 1
    hardware: HardwareSpec
    calibration: Calibration
    efficiency: Efficiency
    comm: Comm
    overheads: Overheads = Field(default_factory=Overheads)  # no section: the default preset
    gemm: GemmSection | None = None
    attention: AttentionSection | None = None
    elementwise: ElementwiseSection | None = None
    host_link: HostLinkSection | None = None
    validation: tuple[ValidationCheck, ...] | None = None
    fit_report: tuple[FitReportEntry, ...] | None = None

    @model_validator(mode="after")
    def _check_version(self) -> HardwareProfile:
        if self.schema_version == 1:
            used = [name for name in _V2_SECTIONS if getattr(self, name) is not None]
            if self.comm.allreduce_tables is not None:
                used.append("comm.allreduce_tables")
            if used:
                raise ValueError(f"{', '.join(used)} need schema_version: 2")
        return self

    @property
    def has_tables(self) -> bool:
        """True when the measured GEMM and attention tables a TableCostModel needs are present."""
        return self.gemm is not None and bool(self.gemm.shapes) and self.attention is not None and any(
            c.prefill is not None and c.decode is not None for c in self.attention.configs
        )
