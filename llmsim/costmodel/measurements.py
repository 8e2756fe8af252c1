"""Raw microbenchmark measurements: the contract between `llmsim calibrate-hardware`'s torch
benchmarks (llmsim.costmodel.calibrate, the only code that imports torch) and the torch-free
fitting that turns them into profile tables (llmsim.costmodel.fit).

Every time is the median of repeated timed launches, in seconds. Shapes are per GPU (already
sharded by tensor parallelism). Plain dataclasses of numbers, so fits and tests can build
synthetic measurements without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GemmPoint:
    n: int  # output features
    k: int  # input features
    tokens: int  # rows (M)
    seconds: float


@dataclass(frozen=True)
class PrefillAttentionPoint:
    q_heads: int
    kv_heads: int
    head_dim: int
    chunk_tokens: int  # new (query) tokens of one sequence
    prefix_tokens: int  # tokens already in KV before the chunk (0 for a fresh prompt)
    batch: int  # sequences of this shape in the launch
    seconds: float


@dataclass(frozen=True)
class DecodeAttentionPoint:
    q_heads: int
    kv_heads: int
    head_dim: int
    batch: int  # sequences, one query token each
    context_tokens: int  # KV length of every sequence
    seconds: float


@dataclass(frozen=True)
class MixedDecodePoint:
    """A paged decode step whose sequences have different KV lengths (a check of the decode fit,
    which is made on equal lengths; not fitted)."""

    q_heads: int
    kv_heads: int
    head_dim: int
    batch: int
    context_sum_tokens: int  # KV tokens read over the batch
    context_max_tokens: int
    seconds: float


@dataclass(frozen=True)
class MoeGemmPoint:
    """The two grouped GEMMs of a fused-MoE MLP (gate-up, then down) over `tokens` tokens routed
    top-k among `experts` experts: what one MoE layer's expert work takes (router and sort aside)."""

    experts: int
    top_k: int
    hidden: int  # k of gate-up, n of down
    intermediate: int  # per expert and GPU
    tokens: int
    experts_hit: int  # experts that received at least one row in this routing
    seconds: float


@dataclass(frozen=True)
class BandwidthPoint:
    num_bytes: float  # bytes read + written by the kernel (elementwise) or copied (host link)
    seconds: float


@dataclass(frozen=True)
class AllReducePoint:
    tp: int
    num_bytes: float  # message size per GPU
    seconds: float


@dataclass
class RawMeasurements:
    device: str  # "cuda" or "cpu"
    device_name: str
    dtype: str  # "bfloat16" or "float32"
    torch_version: str | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    attention_backends: tuple[str, ...] = ()
    timer: str = ""  # e.g. "cuda events, median of 50 after 10 warm-up" or "perf_counter"
    repetitions: int = 0
    duration_s: float = 0.0
    gemm: list[GemmPoint] = field(default_factory=list)
    prefill_attention: list[PrefillAttentionPoint] = field(default_factory=list)
    decode_attention: list[DecodeAttentionPoint] = field(default_factory=list)
    elementwise: list[BandwidthPoint] = field(default_factory=list)
    host_to_device: list[BandwidthPoint] = field(default_factory=list)
    device_to_host: list[BandwidthPoint] = field(default_factory=list)
    allreduce: list[AllReducePoint] = field(default_factory=list)  # empty unless several GPUs
    decode_mixed: list[MixedDecodePoint] = field(default_factory=list)  # CUDA with varlen only
    gpu_state: list[str] = field(default_factory=list)  # "<section>: SM MHz, W, C" read through NVML
    moe_gemm: list[MoeGemmPoint] = field(default_factory=list)  # grouped GEMMs (torch._grouped_mm), MoE models
