"""Hardware calibration: torch microbenchmarks on the user's device -> `RawMeasurements`.

The only part of llmsim that imports torch, and only inside functions: importing this module
(and the two it uses, bench_kernels and bench_attention) costs nothing without torch. The fitting
of profile tables from the measurements is torch-free and lives elsewhere
(llmsim.costmodel.fit, contract in llmsim.costmodel.measurements).

Flow: `plan_for(models, tps, quick, device)` lists what to measure (GEMM shapes sharded by tensor
parallelism, attention head configurations, sizes); `run_microbenchmarks(plan, device)` measures it.
Units: times in seconds per kernel launch (median), sizes in bytes, lengths in tokens, shapes as
(n = output features, k = input features) per GPU. Method: docs/cost-model.md §3-4; details of
the timer in bench_kernels.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.measurements import RawMeasurements
from llmsim.errors import LlmsimError

_INSTALL_HINT = (
    "install it with: pip install torch==2.13.0 (CPU build), a CUDA build from pytorch.org, "
    "or pip install 'llmsim[calibrate]'"
)
_DTYPES = ("bfloat16", "float16", "float32")
_MAX_CONTEXT_TOKENS = 32_768  # longer contexts extrapolate: decode is linear and prefill quadratic in length

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def torch_available() -> bool:
    """Whether torch can be imported (imports it: call only when calibration is wanted)."""
    try:
        import torch  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_torch() -> Any:
    """The torch module, or LlmsimError with a one-line installation hint."""
    try:
        import torch
    except (ImportError, OSError) as exc:
        reason = (str(exc).splitlines() or ["import failed"])[0]
        raise LlmsimError(
            f"hardware calibration needs PyTorch, which cannot be imported ({reason}); {_INSTALL_HINT}"
        ) from None
    return torch


@dataclass
class BenchPlan:
    """What to measure. Shapes and heads are per GPU (sharded); sizes in tokens or bytes."""

    gemm_shapes: list[tuple[int, int]]  # (n output features, k input features)
    gemm_tokens: list[int]  # rows of the activation matrix
    prefill_heads: list[tuple[int, int, int]]  # (q_heads, kv_heads, head_dim); decode uses them too
    prefill_tokens: list[int]  # fresh-prompt lengths (prefix 0)
    chunk_points: list[tuple[int, int]]  # (chunk tokens, prefix tokens already in the KV cache)
    decode_batches: list[int]
    decode_contexts: list[int]  # KV length of every sequence in a decode batch
    elementwise_bytes: list[int]  # bytes read + written by one elementwise kernel
    copy_bytes: list[int]  # host <-> device copy sizes (CUDA only)
    tps: list[int]  # tensor-parallel degrees (all-reduce group sizes)
    allreduce_bytes: list[int] = field(default_factory=list)  # message sizes per GPU
    packed_prefill: list[tuple[int, int]] = field(default_factory=list)  # (prompts, tokens each), varlen, CUDA
    moe_shapes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (experts, top_k, hidden, inter per GPU)
    moe_tokens: list[int] = field(default_factory=list)
    mixed_decode: tuple[list[int], int] = ([], 0)  # (batches, mean context) of mixed-length paged decode, CUDA


# Grids: (full on CUDA, quick on CUDA, full on CPU, quick on CPU). The CPU grids keep a quick run of
# llama-2-7b under 30 s on 2 cores (float32 GEMMs reach ~50-80 GFLOP/s there).
_GEMM_TOKENS = {
    "cuda": [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192],
    "cuda-quick": [1, 16, 64, 256, 1024, 4096],
    "cpu": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    "cpu-quick": [1, 2, 4, 8, 16, 32],
}
_PREFILL_TOKENS = {
    "cuda": [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768],
    "cuda-quick": [256, 1024, 4096],
    "cpu": [64, 128, 256, 512, 1024, 2048],
    "cpu-quick": [64, 256, 512],
}
_CHUNKS = {  # (chunk sizes, prefix sizes): every pair whose total fits the context
    "cuda": ([128, 512, 2048], [512, 2048, 8192, 16384]),
    "cuda-quick": ([512], [1024, 3072]),
    "cpu": ([64, 256], [256, 1024]),
    "cpu-quick": ([64, 128], [256]),
}
_DECODE = {  # (batches, contexts)
    "cuda": ([1, 2, 4, 8, 16, 32, 64, 128, 256], [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]),
    "cuda-quick": ([1, 16, 128], [512, 2048, 8192]),
    "cpu": ([1, 2, 4, 8, 16], [128, 256, 512, 1024, 2048]),
    "cpu-quick": ([1, 4, 8], [128, 512, 1024]),
}
_ELEMENTWISE_BYTES = {
    "cuda": [4 * KiB * 4**i for i in range(10)],  # 4 KiB .. 1 GiB
    "cuda-quick": [64 * KiB, 4 * MiB, 256 * MiB],
    "cpu": [4 * KiB * 4**i for i in range(9)],  # .. 256 MiB
    "cpu-quick": [64 * KiB, 1 * MiB, 16 * MiB],
}
# Swaps move KV blocks: one 16-token block of one layer is 16-128 KiB for 7B-70B models.
_COPY_BYTES = {"cuda": [16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 16 * MiB, 256 * MiB, 1 * GiB], "cuda-quick": [64 * KiB, 1 * MiB, 64 * MiB]}
_PACKED_PREFILL = {"cuda": [(4, 256), (4, 1024), (16, 256)], "cuda-quick": [(4, 512)]}
_MIXED_DECODE = {"cuda": ([8, 64], 2048), "cuda-quick": ([16], 2048)}
_MOE_TOKENS = {"cuda": [1, 4, 16, 64, 256, 1024, 4096], "cuda-quick": [1, 64, 1024], "cpu": [1, 16], "cpu-quick": [1, 16]}
_ALLREDUCE_BYTES = {"cuda": [4 * KiB * 4**i for i in range(9)], "cuda-quick": [64 * KiB, 4 * MiB, 64 * MiB]}


def gemm_shapes(model: ModelArch, tp: int) -> list[tuple[int, int]]:
    """(n, k) of the linear layers on one GPU at tensor parallel `tp`, sharded as vLLM does:
    fused qkv, o, fused gate_up and down of the MLP (or of each expert, plus the router, for
    MoE), and the vocabulary-parallel LM head."""
    hidden, head_dim = model.hidden_size, model.head_dim
    q_dim, kv_dim = model.q_heads_per_gpu(tp) * head_dim, model.kv_heads_per_gpu(tp) * head_dim
    inter = -(-model.intermediate_size // tp)
    shapes = [(q_dim + 2 * kv_dim, hidden), (hidden, q_dim), (2 * inter, hidden), (hidden, inter)]
    if model.is_moe:
        shapes.append((model.num_experts, hidden))  # router, replicated on every GPU
    shapes.append((-(-model.vocab_size // tp), hidden))
    return shapes


def plan_for(models: list[ModelArch], tps: list[int], quick: bool, device: str) -> BenchPlan:
    """The benchmark plan for these models at these TP degrees on a 'cuda' or 'cpu' device.

    Model/TP pairs the model cannot shard (ModelArch.check_tensor_parallel) are left out, so one
    TP list can serve several models; a model that no listed TP can shard is an error.
    """
    if not models:
        raise LlmsimError("calibration needs at least one model")
    kind = ("cuda" if str(device).startswith("cuda") else "cpu") + ("-quick" if quick else "")
    pairs = []
    for model in models:
        valid = [tp for tp in tps if _shardable(model, tp)]
        if not valid:
            model.check_tensor_parallel(tps[0] if tps else 0)  # raises the catalog's message
        pairs += [(model, tp) for tp in valid]
    max_context = min(_MAX_CONTEXT_TOKENS, max(m.max_position_embeddings for m in models))
    chunk_sizes, prefix_sizes = _CHUNKS[kind]
    batches, contexts = _DECODE[kind]
    return BenchPlan(
        gemm_shapes=_unique(shape for model, tp in pairs for shape in gemm_shapes(model, tp)),
        gemm_tokens=list(_GEMM_TOKENS[kind]),
        prefill_heads=_unique((m.q_heads_per_gpu(tp), m.kv_heads_per_gpu(tp), m.head_dim) for m, tp in pairs),
        prefill_tokens=_fitting(_PREFILL_TOKENS[kind], max_context),
        chunk_points=[(c, p) for c in chunk_sizes for p in prefix_sizes if c + p <= max_context]
        or [(min(chunk_sizes), min(prefix_sizes))],
        decode_batches=list(batches),
        decode_contexts=_fitting(contexts, max_context),
        elementwise_bytes=list(_ELEMENTWISE_BYTES[kind]),
        copy_bytes=list(_COPY_BYTES.get(kind, [])),
        tps=sorted({tp for _, tp in pairs}),
        allreduce_bytes=list(_ALLREDUCE_BYTES.get(kind, [])),
        packed_prefill=list(_PACKED_PREFILL.get(kind, [])),
        moe_shapes=_unique((m.num_experts, m.experts_per_token, m.hidden_size, -(-m.intermediate_size // tp))
                           for m, tp in pairs if m.is_moe),
        moe_tokens=list(_MOE_TOKENS[kind]),
        mixed_decode=_MIXED_DECODE.get(kind, ([], 0)),
    )


def run_microbenchmarks(
    plan: BenchPlan,
    device: str = "cuda",
    dtype: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    samples: int | None = None,
) -> RawMeasurements:
    """Measure every point of `plan` on `device` ('cuda', 'cuda:N' or 'cpu').

    dtype defaults to bfloat16 on CUDA and float32 on CPU (CPU bf16 matmuls are emulated and
    slow). `samples` is the number of timed samples per point (default 20 on CUDA, 3 on CPU).
    `progress(done, total, label)` is called after each point. All-reduce points are measured
    only when several GPUs and NCCL are visible; otherwise the list stays empty.
    """
    from llmsim.costmodel import bench_kernels

    torch = require_torch()
    started = time.perf_counter()
    dev, dtype_name = _resolve_device(torch, device, dtype)
    cuda = dev.type == "cuda"
    if samples is None:
        samples = 20 if cuda else 3
    timer = bench_kernels.Timer(torch, cuda=cuda, samples=samples, warmup=3 if cuda else 1)
    do_allreduce = bench_kernels.allreduce_possible(torch, dev.type)
    total = _count_points(plan, cuda, do_allreduce, torch)
    env = _bench_env(torch, dev, dtype_name, timer, total, progress)
    if cuda:
        torch.cuda.set_device(dev)
    torch.manual_seed(0)
    raw = RawMeasurements(device=dev.type, device_name=_device_name(torch, dev), dtype=dtype_name)
    labels = _measure_kernels(env, plan, raw)
    if do_allreduce:
        raw.allreduce = bench_kernels.bench_allreduce(env, plan.tps, plan.allreduce_bytes, dtype_name)
    raw.torch_version = str(torch.__version__)
    raw.cuda_version = torch.version.cuda if cuda else None
    raw.driver_version = _driver_version() if cuda else None
    raw.attention_backends = tuple(labels)
    raw.timer = _timer_description(env, raw.gpu_state)
    raw.repetitions = samples
    raw.duration_s = time.perf_counter() - started
    return raw


def _bench_env(torch: Any, dev: Any, dtype_name: str, timer: Any, total: int,
               progress: Callable[[int, int, str], None] | None) -> Any:
    """The bench_kernels.BenchEnv of a run on `dev`, whose tick calls `progress(done, total, label)`
    after each of the `total` points."""
    from llmsim.costmodel import bench_kernels

    done = 0

    def tick(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label)

    return bench_kernels.BenchEnv(
        torch=torch,
        device=dev,
        dtype=getattr(torch, dtype_name),
        timer=timer,
        l2_bytes=_l2_bytes(torch, dev),
        memory_budget_bytes=_memory_budget(torch, dev),
        tick=tick,
    )


def _measure_kernels(env: Any, plan: BenchPlan, raw: RawMeasurements) -> list[str]:
    """Measure the plan's GEMMs, attention, elementwise kernels and host copies into `raw`; returns
    the attention backends' labels."""
    from llmsim.costmodel import bench_attention, bench_engine, bench_kernels

    torch = env.torch
    labels: list[str] = []
    # CPU runs use one thread: waking OpenMP workers costs up to milliseconds on shared or
    # virtualised machines (8 ms steps seen on a 2-core CI box), which swamps small kernels and
    # even made GEMMs slower than on one thread. A CPU profile is coarse anyway.
    threads = torch.get_num_threads()

    def state(section: str) -> None:
        if reading := bench_engine.gpu_state(env):
            raw.gpu_state.append(f"{section}: {reading}")

    try:
        if not env.cuda:
            torch.set_num_threads(1)
        with torch.inference_mode():
            if impl := bench_engine.prefer_fa3(env):
                labels.append(impl)
            bench_engine.warm_clocks(env)  # compute-bound points at settled clocks, not at boost
            state("GEMMs, start")
            raw.gemm = bench_kernels.bench_gemm(env, plan.gemm_shapes, plan.gemm_tokens)
            bench_engine.warm_clocks(env, seconds=1.0)
            state("attention, start")
            raw.prefill_attention = bench_attention.bench_prefill(
                env, plan.prefill_heads, plan.prefill_tokens, plan.chunk_points, labels
            ) + bench_attention.bench_packed_prefill(env, plan.prefill_heads, plan.packed_prefill, labels)
            raw.decode_attention = bench_attention.bench_decode(
                env, plan.prefill_heads, plan.decode_batches, plan.decode_contexts, labels
            )
            raw.decode_mixed = bench_engine.bench_decode_mixed(env, plan.prefill_heads, *plan.mixed_decode)
            state("attention, end")
            raw.moe_gemm = bench_engine.bench_moe_gemm(env, plan.moe_shapes, plan.moe_tokens)
            raw.elementwise = bench_engine.bench_norm_activation(env, plan.elementwise_bytes)
            raw.host_to_device, raw.device_to_host = bench_kernels.bench_host_copies(env, plan.copy_bytes)
            state("end")
    finally:
        torch.set_num_threads(threads)
    return labels


def _resolve_device(torch: Any, device: str, dtype: str | None) -> tuple[Any, str]:
    name = str(device)
    if not (name == "cpu" or name.startswith("cuda")):
        raise LlmsimError(f"unknown calibration device '{device}'; use 'cuda', 'cuda:N' or 'cpu'")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LlmsimError(f"unknown calibration device '{device}'; use 'cuda', 'cuda:N' or 'cpu'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LlmsimError(
                f"CUDA is not available to torch {torch.__version__} (a CPU build, or no GPU visible); "
                "install a CUDA build from pytorch.org, or use --device cpu for a coarse CPU profile"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LlmsimError(f"device {name} does not exist: {torch.cuda.device_count()} GPU(s) visible")
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    dtype_name = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    if dtype_name not in _DTYPES:
        raise LlmsimError(f"unsupported calibration dtype '{dtype_name}'; use one of {', '.join(_DTYPES)}")
    return dev, dtype_name


def _count_points(plan: BenchPlan, cuda: bool, do_allreduce: bool, torch: Any) -> int:
    heads = len(plan.prefill_heads)
    total = len(plan.gemm_shapes) * len(plan.gemm_tokens)
    total += heads * (len(plan.prefill_tokens) + len(plan.chunk_points))
    total += heads * len(plan.decode_batches) * len(plan.decode_contexts)
    total += 2 * len(plan.elementwise_bytes) + (2 * len(plan.copy_bytes) if cuda else 0)
    total += heads * (len(plan.packed_prefill) + len(plan.mixed_decode[0])) + len(plan.moe_shapes) * len(plan.moe_tokens)
    if do_allreduce:
        tps = [tp for tp in plan.tps if 2 <= tp <= torch.cuda.device_count()]
        total += len(tps) * len(plan.allreduce_bytes)
    return total


def _l2_bytes(torch: Any, dev: Any) -> int:
    if dev.type != "cuda":
        return 0
    return int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 50 * MiB))


def _memory_budget(torch: Any, dev: Any) -> int:
    """Largest working set one point may allocate: 40% of free GPU memory (room for cuBLAS
    workspaces, graph pools and fragmentation), 1 GiB on CPU (2-core CI machines)."""
    if dev.type != "cuda":
        return 1 * GiB
    free_bytes, _ = torch.cuda.mem_get_info(dev)
    return int(0.4 * free_bytes)


def _device_name(torch: Any, dev: Any) -> str:
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    name = platform.processor()
    try:  # Linux leaves platform.processor() empty or as the architecture; cpuinfo has the model
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return name or platform.machine() or "cpu"


def _driver_version() -> str | None:
    """NVIDIA driver version from nvidia-smi (torch does not expose it), None if absent."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def _timer_description(env: Any, gpu_state: list[str]) -> str:
    timer = env.timer
    if not env.cuda:
        return (
            f"time.perf_counter on 1 thread around 1-64 eager calls per sample (~1 ms), median of {timer.samples} "
            f"samples after {timer.warmup} warm-up call"
        )
    return (
        f"cuda events around CUDA-graph replays of 1-64 launches per sample (~1 ms; "
        f"{timer.graph_points} points by graph, {timer.eager_points} eager), median of {timer.samples} "
        f"samples after {timer.warmup} warm-up launches; weights and KV caches rotated over copies "
        f"totalling >= 2x the {env.l2_bytes // MiB} MiB L2 (at most 32 copies); 2 s of GEMMs before the "
        f"GEMM section and 1 s before attention to settle clocks"
        + (f"; GPU state (NVML): {'; '.join(gpu_state)}" if gpu_state else "")
    )


def _shardable(model: ModelArch, tp: int) -> bool:
    try:
        model.check_tensor_parallel(tp)
    except LlmsimError:
        return False
    return True


def _unique(items: Iterable[Any]) -> list[Any]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


def _fitting(sizes: list[int], limit: int) -> list[int]:
    """Sizes up to limit, or the smallest one if none fits (a model with a tiny context)."""
    return [s for s in sizes if s <= limit] or [min(sizes)]
