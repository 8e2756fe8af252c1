"""Attention microbenchmarks of `llmsim calibrate-hardware`: prefill, chunked prefill, decode.

Part of llmsim.costmodel.calibrate; torch comes in through the `BenchEnv`, so importing this
module does not import torch. Head counts are per GPU (sharded by TP); times are seconds per
launch (median), lengths are tokens. Layout is (batch, heads, tokens, head_dim), SDPA's.

- Prefill: `scaled_dot_product_attention(is_causal=True)` with the flash backend forced
  (`sdpa_kernel(FLASH_ATTENTION)`); GQA through `enable_gqa=True` where torch has it, otherwise
  K/V are repeated to the query heads before timing (recorded).
- Chunked prefill: c query tokens over p + c keys. `is_causal` aligns the mask upper-left when
  the lengths differ (query i would see keys 0..i, not the prefix), so the mask is
  `causal_lower_right(c, p + c)`: query i sees the prefix and chunk tokens 0..i.
- Decode: flash-attn's `flash_attn_with_kvcache` if importable (CUDA, 16-bit), else SDPA with one
  query token per sequence and the query heads of each KV head folded into the query-length axis
  ((batch, kv_heads, group, head_dim) against (batch, kv_heads, context, head_dim), no mask: all
  rows are at the last position), which reads each KV head once, as decode kernels do.
If forcing flash fails (no kernel for the dtype, head_dim or device), the default dispatch is
used and the label says so. The labels end up in RawMeasurements.attention_backends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from llmsim.costmodel.bench_kernels import BenchEnv, release
from llmsim.costmodel.measurements import DecodeAttentionPoint, PrefillAttentionPoint

HeadConfig = tuple[int, int, int]  # (q_heads, kv_heads, head_dim) per GPU


def bench_prefill(
    env: BenchEnv,
    heads: list[HeadConfig],
    seq_lens: list[int],
    chunk_points: list[tuple[int, int]],
    labels: list[str],
) -> list[PrefillAttentionPoint]:
    """Fresh prompts of each length (prefix 0) and (chunk, prefix) chunked-prefill points, batch 1."""
    from torch.nn.attention.bias import causal_lower_right

    points = []
    for q_heads, kv_heads, head_dim in heads:
        shapes = [(s, 0) for s in seq_lens] + list(chunk_points)
        for chunk, prefix in shapes:
            q = env.randn(1, q_heads, chunk, head_dim)
            k, v, gqa_note, kwargs = _kv_for_gqa(env, q_heads, kv_heads, prefix + chunk, head_dim)
            if prefix:
                kwargs["attn_mask"] = causal_lower_right(chunk, prefix + chunk)
            else:
                kwargs["is_causal"] = True
            call = _sdpa_call(env, q, k, v, kwargs)
            stage = "chunked prefill" if prefix else "prefill"
            ctx, backend = _pick_backend(env, call)
            if prefix and env.cuda and backend == "flash" and not _flash_takes_lower_right(env, q, k, v, kwargs):
                backend = "efficient (lower-right mask)"  # CausalBias dispatches past the forced backend
            _add_label(labels, f"{stage}: sdpa {backend}{gqa_note}")
            with ctx():
                seconds = env.timer.seconds(lambda i, call=call: call())
            points.append(PrefillAttentionPoint(q_heads, kv_heads, head_dim, chunk, prefix, 1, seconds))
            env.tick(f"{stage} heads={q_heads}/{kv_heads}x{head_dim} chunk={chunk} prefix={prefix}")
    release(env)
    return points


def bench_decode(
    env: BenchEnv,
    heads: list[HeadConfig],
    batches: list[int],
    contexts: list[int],
    labels: list[str],
) -> list[DecodeAttentionPoint]:
    """One query token per sequence over a full KV cache, for each (batch, context) that fits:
    the paged varlen kernel where torch has it (CUDA), else flash-attn's KV-cache kernel, else SDPA."""
    from llmsim.costmodel.bench_engine import paged_decode, varlen

    flash_kvcache, paged = _flash_attn_kvcache(env), varlen(env)
    points = []
    for q_heads, kv_heads, head_dim in heads:
        for batch in batches:
            for context in contexts:
                kv_bytes = 2 * batch * context * kv_heads * head_dim * env.element_bytes
                tag = f"decode heads={q_heads}/{kv_heads}x{head_dim} batch={batch} context={context}"
                if kv_bytes > env.memory_budget_bytes:
                    env.tick(tag + " (skipped: over the memory budget)")
                    continue
                copies = env.rotation_copies(kv_bytes)  # a layer's KV is never L2-resident in a real step
                shape = (q_heads, kv_heads, head_dim, batch, context, copies)
                built = None
                if paged is not None and (got := paged_decode(env, paged, shape[:3], [context] * batch, copies)):
                    built = (got[0], contextlib.nullcontext, got[1])
                if built is None and flash_kvcache is not None:
                    built = _decode_flash_attn(env, flash_kvcache, *shape)
                if built is None:
                    built = _decode_sdpa_folded(env, *shape)
                launch, ctx, backend = built
                _add_label(labels, f"decode: {backend}")
                with ctx():
                    seconds = env.timer.seconds(launch)
                points.append(DecodeAttentionPoint(q_heads, kv_heads, head_dim, batch, context, seconds))
                env.tick(tag)
                del built, launch  # free this point's KV before the next one allocates its own
            release(env)
    return points


def bench_packed_prefill(
    env: BenchEnv, heads: list[HeadConfig], packs: list[tuple[int, int]], labels: list[str]
) -> list[PrefillAttentionPoint]:
    """Several fresh prompts packed into one causal varlen launch, as engines batch prefills
    (CUDA with torch's varlen kernel; each point is skipped, and counted, without it)."""
    from llmsim.costmodel.bench_engine import packed_prefill, varlen

    kernel, points = varlen(env, paged=False), []
    for cfg in heads:
        for prompts, tokens in packs:
            tag = f"packed prefill heads={cfg[0]}/{cfg[1]}x{cfg[2]} {prompts}x{tokens}"
            launch = packed_prefill(env, kernel, cfg, prompts, tokens) if kernel is not None else None
            if launch is None:
                env.tick(tag + " (skipped: no varlen kernel)")
                continue
            _add_label(labels, "packed prefill: varlen flash (cu_seqlens)")
            points.append(PrefillAttentionPoint(*cfg, tokens, 0, prompts, env.timer.seconds(launch)))
            env.tick(tag)
            del launch
    release(env)
    return points


_Built = tuple[Callable[[int], Any], Callable[[], Any], str]  # (launch, context factory, label)


def _decode_flash_attn(
    env: BenchEnv,
    kernel: Callable[..., Any],
    q_heads: int,
    kv_heads: int,
    head_dim: int,
    batch: int,
    context: int,
    copies: int,
) -> _Built | None:
    """flash_attn_with_kvcache on (batch, context, kv_heads, head_dim) caches; None if it fails."""
    q = env.randn(batch, 1, q_heads, head_dim)
    caches = [
        (env.randn(batch, context, kv_heads, head_dim), env.randn(batch, context, kv_heads, head_dim))
        for _ in range(copies)
    ]
    lengths = env.torch.full((batch,), context, dtype=env.torch.int32, device=env.device)

    def launch(i: int) -> None:
        k, v = caches[i % copies]
        kernel(q, k, v, cache_seqlens=lengths)

    try:
        launch(0)
        env.timer.sync()
    except Exception:  # noqa: BLE001 - e.g. a head_dim the installed build lacks: fall back to SDPA
        return None
    return launch, contextlib.nullcontext, "flash_attn.flash_attn_with_kvcache"


def _decode_sdpa_folded(
    env: BenchEnv, q_heads: int, kv_heads: int, head_dim: int, batch: int, context: int, copies: int
) -> _Built:
    """SDPA with the query heads sharing a KV head folded into the query-length axis."""
    q = env.randn(batch, kv_heads, q_heads // kv_heads, head_dim)
    calls = [
        _sdpa_call(
            env, q, env.randn(batch, kv_heads, context, head_dim), env.randn(batch, kv_heads, context, head_dim), {}
        )
        for _ in range(copies)
    ]
    ctx, name = _pick_backend(env, calls[0])
    return (lambda i: calls[i % copies]()), ctx, f"sdpa {name}, query group folded"


def _kv_for_gqa(env: BenchEnv, q_heads: int, kv_heads: int, length: int, head_dim: int) -> tuple[Any, Any, str, dict]:
    """K and V for GQA: native (enable_gqa) where torch supports it, else repeated to q_heads."""
    k, v = env.randn(1, kv_heads, length, head_dim), env.randn(1, kv_heads, length, head_dim)
    if kv_heads == q_heads:
        return k, v, "", {}
    if _supports_enable_gqa(env.torch):
        return k, v, " (GQA via enable_gqa)", {"enable_gqa": True}
    group = q_heads // kv_heads
    return (
        k.repeat_interleave(group, dim=1),
        v.repeat_interleave(group, dim=1),
        " (K/V repeated to the query heads)",
        {},
    )


def _sdpa_call(env: BenchEnv, q: Any, k: Any, v: Any, kwargs: dict) -> Callable[[], Any]:
    sdpa = env.torch.nn.functional.scaled_dot_product_attention
    return lambda: sdpa(q, k, v, **kwargs)


def _pick_backend(env: BenchEnv, call: Callable[[], Any]) -> tuple[Callable[[], Any], str]:
    """(context factory, label): flash forced if a trial call succeeds, else the default dispatch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            call()
        env.timer.sync()
        return (lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)), "flash"
    except RuntimeError:
        return contextlib.nullcontext, "default dispatch (flash unavailable)"


def _flash_takes_lower_right(env: BenchEnv, q: Any, k: Any, v: Any, kwargs: dict) -> bool:
    """Whether CausalBias(lower right) will call the flash kernel: it checks flash eligibility
    itself and falls back to the efficient kernel without consulting sdpa_kernel's choice."""
    try:
        params = env.torch.backends.cuda.SDPAParams(q, k, v, None, 0.0, False, bool(kwargs.get("enable_gqa")))
        return bool(env.torch.backends.cuda.can_use_flash_attention(params))
    except (AttributeError, TypeError, RuntimeError):
        return True  # cannot tell: keep the forced backend's label


_GQA_SUPPORT: dict[str, bool] = {}


def _supports_enable_gqa(torch: Any) -> bool:
    """SDPA's enable_gqa appeared in torch 2.5; probe it on tiny CPU tensors once."""
    if torch.__version__ not in _GQA_SUPPORT:
        q, kv = torch.randn(1, 2, 4, 8), torch.randn(1, 1, 4, 8)
        try:
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
            _GQA_SUPPORT[torch.__version__] = True
        except (TypeError, RuntimeError):
            _GQA_SUPPORT[torch.__version__] = False
    return _GQA_SUPPORT[torch.__version__]


def _flash_attn_kvcache(env: BenchEnv) -> Callable[..., Any] | None:
    """flash-attn's KV-cache decode kernel, when installed and usable (CUDA, fp16/bf16)."""
    if not env.cuda or env.dtype not in (env.torch.float16, env.torch.bfloat16):
        return None
    try:
        from flash_attn import flash_attn_with_kvcache
    except Exception:  # noqa: BLE001 - absent, or built against another torch: use SDPA
        return None
    return flash_attn_with_kvcache


def _add_label(labels: list[str], label: str) -> None:
    if label not in labels:
        labels.append(label)
