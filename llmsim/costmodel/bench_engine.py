"""Engine-kernel pieces of `llmsim calibrate-hardware`: what serving engines launch, not stand-ins.

Part of llmsim.costmodel.calibrate (torch comes in through the `BenchEnv`; importing this module
imports no torch). Times are seconds per launch, sizes bytes, lengths tokens.

- Paged decode attention: `torch.nn.attention.varlen.varlen_attn` over a block table
  (`block_table`, `seqused_k`; torch >= 2.10's FlashAttention varlen path), one query token per
  sequence, the kernel vLLM/FlashInfer-style engines run. Mixed context lengths are measured too
  (`bench_decode_mixed`), to check that the table fitted on equal lengths prices a mixed batch.
- Packed multi-prompt prefill: several prompts in one varlen launch (`cu_seq_q`), as engines
  batch prefills.
- RMSNorm (`F.rms_norm`) and SiLU-and-mul: the elementwise work of a layer.
- Fused MoE: the expert MLP of a MoE layer as two grouped GEMMs (`torch._grouped_mm`, what
  torch's MoE kernels and fused-MoE engines run) over tokens routed top-k at random; compared in
  the fit with the dense GEMM tables of the same shapes (llmsim.costmodel.fit_moe).
- Clock warm-up before compute-bound sections, and the GPU's SM clock, power and temperature read
  through NVML (nvidia-ml-py) around each section, recorded with the timer description.

The switch: everything marked CUDA-only below runs only when `env.cuda` is true; on CPU the
varlen kernels do not exist, so decode and prefill fall back to SDPA (bench_attention) and the
norm/activation kernels run on CPU as they are (tests exercise that path).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

from llmsim.costmodel.measurements import BandwidthPoint, MixedDecodePoint, MoeGemmPoint

BLOCK_TOKENS = 16  # vLLM's default KV block size


def varlen(env: Any, paged: bool = True) -> Callable[..., Any] | None:
    """torch's varlen FlashAttention entry point (CUDA-only, 16-bit), else None; with `paged`, only
    if it takes a block table (torch 2.11 has varlen_attn without one, 2.13 with)."""
    if not env.cuda or env.dtype not in (env.torch.float16, env.torch.bfloat16):
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn if not paged or "block_table" in inspect.signature(varlen_attn).parameters else None


def paged_decode(env: Any, kernel: Callable[..., Any], heads: tuple[int, int, int], contexts: list[int],
                 copies: int) -> tuple[Callable[[int], Any], str] | None:
    """(launch(i), label) of one paged decode step over sequences of these KV lengths, or None if
    the kernel refuses the shape. The KV pool is rotated over `copies` pools (L2). 16-token
    blocks first (vLLM's); FlashAttention-2's paged path wants pages of a multiple of 256 tokens."""
    for block_tokens in (BLOCK_TOKENS, 256):
        built = _paged_decode(env, kernel, heads, contexts, copies, block_tokens)
        if built is not None:
            return built, f"varlen paged (block table, {block_tokens}-token blocks)"
    return None


def _paged_decode(env: Any, kernel: Callable[..., Any], heads: tuple[int, int, int], contexts: list[int],
                  copies: int, block_tokens: int) -> Callable[[int], Any] | None:
    torch = env.torch
    q_heads, kv_heads, head_dim = heads
    blocks_per_seq = [math.ceil(c / block_tokens) for c in contexts]
    total_blocks = sum(blocks_per_seq)
    # Pages of a real pool are scattered: each sequence gets a random set of block ids.
    perm = torch.randperm(total_blocks, device=env.device).to(torch.int32)
    table = torch.zeros((len(contexts), max(blocks_per_seq)), dtype=torch.int32, device=env.device)
    start = 0
    for row, n in enumerate(blocks_per_seq):
        table[row, :n] = perm[start:start + n]
        start += n
    pools = [(env.randn(total_blocks, block_tokens, kv_heads, head_dim), env.randn(total_blocks, block_tokens, kv_heads, head_dim))
             for _ in range(copies)]
    q = env.randn(len(contexts), q_heads, head_dim)
    cu_q = torch.arange(len(contexts) + 1, dtype=torch.int32, device=env.device)
    used = torch.tensor(contexts, dtype=torch.int32, device=env.device)
    max_k = max(blocks_per_seq) * block_tokens

    def launch(i: int) -> None:
        k, v = pools[i % copies]
        kernel(q, k, v, cu_q, None, 1, max_k, enable_gqa=q_heads != kv_heads, seqused_k=used, block_table=table)

    try:
        launch(0)
        env.timer.sync()
    except Exception:  # noqa: BLE001 - a page size, head_dim or GQA ratio this build lacks
        return None
    return launch


def packed_prefill(env: Any, kernel: Callable[..., Any], heads: tuple[int, int, int], prompts: int,
                   tokens_each: int) -> Callable[[int], Any] | None:
    """launch(i) of one causal varlen prefill of `prompts` packed prompts, or None if refused."""
    torch = env.torch
    q_heads, kv_heads, head_dim = heads
    total = prompts * tokens_each
    q, k, v = env.randn(total, q_heads, head_dim), env.randn(total, kv_heads, head_dim), env.randn(total, kv_heads, head_dim)
    cu = torch.arange(0, total + 1, tokens_each, dtype=torch.int32, device=env.device)

    params = inspect.signature(kernel).parameters
    # torch 2.11's varlen_attn takes is_causal (and GQA natively); 2.13's a window and enable_gqa.
    kwargs = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "enable_gqa" in params:
        kwargs["enable_gqa"] = q_heads != kv_heads

    def launch(i: int) -> None:
        kernel(q, k, v, cu, cu, tokens_each, tokens_each, **kwargs)

    try:
        launch(0)
        env.timer.sync()
    except Exception:  # noqa: BLE001
        return None
    return launch


def bench_decode_mixed(env: Any, heads: list[tuple[int, int, int]], batches: list[int], mean_context: int) -> list[MixedDecodePoint]:
    """Paged decode over batches whose lengths spread from 1/8 to 15/8 of `mean_context` (CUDA-only;
    empty without the varlen kernel)."""
    kernel, points = varlen(env), []
    for cfg in heads:
        for batch in batches:
            if kernel is None:
                env.tick(f"mixed decode heads={cfg[0]}/{cfg[1]} batch={batch} (skipped: no varlen kernel)")
                continue
            contexts = [max(1, round(mean_context * (0.125 + 1.75 * i / max(1, batch - 1)))) for i in range(batch)]
            kv_bytes = 2 * sum(contexts) * cfg[1] * cfg[2] * env.element_bytes
            built = None if kv_bytes > env.memory_budget_bytes else paged_decode(env, kernel, cfg, contexts, env.rotation_copies(kv_bytes))
            if built is None:
                env.tick(f"mixed decode heads={cfg[0]}/{cfg[1]} batch={batch} (skipped: over budget or refused)")
                continue
            seconds = env.timer.seconds(built[0])
            points.append(MixedDecodePoint(*cfg, batch=batch, context_sum_tokens=sum(contexts),
                                           context_max_tokens=max(contexts), seconds=seconds))
            env.tick(f"mixed decode heads={cfg[0]}/{cfg[1]} batch={batch}")
            del built
    return points


def bench_norm_activation(env: Any, sizes_bytes: list[int]) -> list[BandwidthPoint]:
    """RMSNorm over (rows, width) and SiLU-and-mul over (rows, 2 x width), width up to 4096 (a
    hidden size), each sized to move about the given bytes; a point carries the bytes its kernel
    reads and writes. Two points per size, norm first."""
    torch, F, e = env.torch, env.torch.nn.functional, env.element_bytes
    points = []
    for total in sizes_bytes:
        width = max(8, min(4096, total // (3 * e)) // 8 * 8)
        rows = max(1, total // (3 * width * e))
        x, weight = env.randn(rows, width), env.randn(width)
        norm_bytes = float((2 * rows * width + width) * e)  # read x and the weight, write y
        points.append(BandwidthPoint(norm_bytes, env.timer.seconds(
            lambda i, x=x, weight=weight, width=width: F.rms_norm(x, (width,), weight, 1e-5))))
        env.tick(f"rms_norm {total} B")
        gate_up = env.randn(rows, 2 * width)
        out = torch.empty((rows, width), device=env.device, dtype=env.dtype)
        # Eager torch runs silu then mul (two kernels); the bytes counted are those of a fused
        # kernel (read 2N, write N), so this point is a conservative (slow) engine estimate.
        act_bytes = float(3 * rows * width * e)
        points.append(BandwidthPoint(act_bytes, env.timer.seconds(
            lambda i, g=gate_up, out=out, width=width: torch.mul(F.silu(g[:, :width]), g[:, width:], out=out))))
        env.tick(f"silu_and_mul {total} B")
    return points


def warm_clocks(env: Any, seconds: float = 2.0) -> None:
    """CUDA-only: run large GEMMs for `seconds` so the SM clock and power settle before
    compute-bound points are timed (the first tens of milliseconds run at boost, then throttle)."""
    if not env.cuda:
        return
    a = env.randn(8192, 8192)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(8):
            a @ a
        env.timer.sync()


def gpu_state(env: Any) -> str:
    """'SM <MHz> MHz, <W> W, <C> C' read through NVML (CUDA-only), or '' when NVML is absent."""
    if not env.cuda:
        return ""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(env.device.index or 0)
        sm = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
        watts = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
        temp = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        return f"SM {sm} MHz, {watts:.0f} W, {temp} C"
    except Exception:  # noqa: BLE001 - nvidia-ml-py absent or NVML refused: the state is only provenance
        return ""


def prefer_fa3(env: Any) -> str:
    """CUDA-only: switch SDPA's flash backend to FlashAttention-3 where torch has it registered
    (Hopper with the FA3 package), as Hopper engines run; returns the implementation in use."""
    if not env.cuda:
        return ""
    attention = env.torch.nn.attention
    try:
        if "FA3" in attention.list_flash_attention_impls():
            attention.activate_flash_attention_impl("FA3")
        return f"flash implementation: {attention.current_flash_attention_impl() or 'FA2 (built in)'}"
    except Exception:  # noqa: BLE001 - torch without the registry (< 2.10) or FA3 refused: built-in FA2
        return "flash implementation: FA2 (built in)"


def bench_moe_gemm(env: Any, shapes: list[tuple[int, int, int, int]], token_counts: list[int]) -> list[MoeGemmPoint]:
    """(experts, top_k, hidden, intermediate) MoE MLPs at each token count: gate-up and down as
    grouped GEMMs over rows sorted by expert (weights stacked (E, out, in), rotated for L2). Points
    are skipped, and counted, where torch has no grouped GEMM."""
    torch, points = env.torch, []
    grouped = getattr(torch, "_grouped_mm", None)
    for experts, top_k, hidden, inter in shapes:
        weight_bytes = 3 * experts * hidden * inter * env.element_bytes
        copies = env.rotation_copies(weight_bytes)
        weights = [(env.randn(experts, 2 * inter, hidden), env.randn(experts, hidden, inter)) for _ in range(copies)] \
            if grouped is not None and weight_bytes * copies <= env.memory_budget_bytes else None
        for tokens in token_counts:
            tag = f"fused MoE E={experts} k={top_k} {hidden}x{inter} tokens={tokens}"
            built = _moe_launch(env, grouped, weights, experts, top_k, hidden, tokens) if weights else None
            if built is None:
                env.tick(tag + " (skipped: no grouped GEMM or over budget)")
                continue
            launch, hit = built
            points.append(MoeGemmPoint(experts, top_k, hidden, inter, tokens, hit, env.timer.seconds(launch)))
            env.tick(tag)
        del weights
    return points


def _moe_launch(env: Any, grouped: Callable[..., Any], weights: list, experts: int, top_k: int, hidden: int,
                tokens: int) -> tuple[Callable[[int], Any], int] | None:
    """launch(i) of one routing's two grouped GEMMs, and the experts it hits; None if refused."""
    torch = env.torch
    chosen = torch.rand(tokens, experts, device=env.device).topk(top_k, dim=1).indices.reshape(-1)
    counts = torch.bincount(chosen, minlength=experts)
    offs = counts.cumsum(0).to(torch.int32)
    rows, act = env.randn(tokens * top_k, hidden), env.randn(tokens * top_k, weights[0][1].shape[2])

    def launch(i: int) -> None:  # SiLU-and-mul between the two is timed with the elementwise kernels
        gate_up, down = weights[i % len(weights)]
        grouped(rows, gate_up.transpose(-2, -1), offs=offs)
        grouped(act, down.transpose(-2, -1), offs=offs)

    try:
        launch(0)
        env.timer.sync()
    except Exception:  # noqa: BLE001 - a dtype or device this torch's grouped GEMM lacks
        return None
    return launch, int((counts > 0).sum())
