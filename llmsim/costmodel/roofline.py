"""Kernel-time building blocks shared by the cost models: the smooth roofline and the all-reduce.

A kernel that does `c` seconds of compute at its achieved FLOP/s and moves `m` seconds of bytes at
its achieved bandwidth takes

    launch + smooth_max(c, m) = launch + (c^p + m^p)^(1/p)

which is never below max(c, m) (nor below either bound) and, unlike a hard max(), charges the
crossover region where neither unit is saturated: at c = m it is 2^(1/p) x max. p = inf is the hard
max. An all-reduce of b bytes per GPU over a TP group of k takes latency(k) + 2 (k - 1) / k x b /
bus(k) with a latency and a bus bandwidth per TP degree (`allreduce_params`). Units: seconds,
bytes, FLOP.

Defaults for profiles that do not set the optional efficiency fields (each fitted to public
measurements; Vidur's profiles are MIT-licensed, github.com/microsoft/vidur, data/profiling):
- DEFAULT_ROOFLINE_P = 2: against Vidur's per-operator GEMM times for Llama-2-7B (qkv, o, gate-up,
  down at TP 1, 2, 4, 8, 1 to 4096 tokens; compute/a100 and compute/h100 mlp.csv), p = 2 with a
  ~5 us GEMM launch gives a median |error| of 6% on both GPUs (p = 1.5: 5%; hard max with a kernel
  floor: 12% on A100, 20% on H100, and -35% / -41% median below 512 tokens).
- DEFAULT_GEMM_LAUNCH_US = 5: the best launch term of that fit (A100 5 us, H100 6 us).
- DEFAULT_KERNEL_LAUNCH_US = 2: the shortest elementwise kernels in the same files (add, rotary,
  SiLU-mul at one token) take 1 to 2 us on A100 and H100; SGLang's silu_and_mul at 6 rows takes
  1.3 us on H100 (sgl-project/sglang PR #33903).
- DEFAULT_MOE_GEMM_EFFICIENCY = 0.8: fused-MoE expert GEMMs priced as dense ones were 17 to 31%
  too fast against public Mixtral step latencies (issue 23), i.e. the fused kernels reach 0.76 to
  0.85 of a dense GEMM's rate (per-expert padding of the token blocks, skinny per-expert tiles; the
  Triton fused_moe kernel, vllm-project/vllm PR #2913).
"""

from __future__ import annotations

import math

DEFAULT_ROOFLINE_P = 2.0
DEFAULT_GEMM_LAUNCH_US = 5.0
DEFAULT_KERNEL_LAUNCH_US = 2.0
DEFAULT_MOE_GEMM_EFFICIENCY = 0.8


def smooth_max(c: float, m: float, p: float) -> float:
    """(c^p + m^p)^(1/p) for non-negative c, m: max(c, m) <= result <= 2^(1/p) x max(c, m)."""
    if p == 2.0:
        return smooth_max_2(c, m)
    if math.isinf(p):
        return c if c > m else m
    big = c if c > m else m
    if big <= 0.0:
        return 0.0
    return big * ((c / big) ** p + (m / big) ** p) ** (1.0 / p)  # scaled: no overflow at large p


def smooth_max_2(c: float, m: float) -> float:
    """smooth_max at p = 2, as sqrt(c^2 + m^2) rather than math.hypot: the same IEEE operations
    whether Python or numba runs them (roofline_run.py compiles the decode loop; CPython's hypot
    and the C library's, which numba calls, differ in the last bit for about 3 in 1,000 pairs).
    Kernel times (microseconds to seconds) are far from where the squares could overflow."""
    return math.sqrt(c * c + m * m)


def allreduce_params(comm, tp: int) -> tuple[float, float]:
    """(latency s, s per byte per GPU) of a ring all-reduce over `tp` GPUs: the profile's
    `comm.allreduce_by_tp` entry for that degree, else its scalar latency and bus bandwidth."""
    latency_us, bus_gb_per_s = comm.allreduce_latency_us, comm.allreduce_bus_gb_per_s
    for fit in comm.allreduce_by_tp or ():
        if fit.tp == tp:
            latency_us, bus_gb_per_s = fit.latency_us, fit.bus_gb_per_s
    return latency_us * 1e-6, 2.0 * (tp - 1) / tp / (bus_gb_per_s * 1e9)
