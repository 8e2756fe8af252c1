"""Compiled twin (numba) of the analytic model's decode-run pricer (analytic.py).

Fast-forward prices every run of decode steps it plans, a few to 32 steps each, and on 64 replicas
with load-aware routing about half of them are priced in vain (an arrival cuts the run). In
Python a priced step costs about 0.15 us of interpreter work; this kernel prices a run in one call.
It performs the same IEEE operations in the same order as the Python loop (numba contracts
nothing into fused multiply-adds without fastmath, and an integer context sum times a float is
the same conversion and product), so every end and duration is the same bits;
tests/test_costmodel.py checks that on random inputs.

Whether it may be used is the schedulers' switch (llmsim.schedulers._compiled.available: numba
importable and LLMSIM_PURE_NUMPY unset); when, the analytic model decides
(analytic.pricer_switch_after_steps: once a run has priced enough steps to pay the kernel's
start-up back). The kernel is compiled, or loaded from numba's on-disk cache, on first use.

Units: seconds, tokens, bytes.
"""

from __future__ import annotations

_kernel = None


def _decode_run_times(out, start_s, context_sum_tokens, decode_seqs, num_steps, horizon_s, fixed_s, layers,
                      kv_bytes_per_token, q_bytes, bytes_per_s, flops_per_pair, flops_per_s, floor_s):
    """The analytic pricer's loop (AnalyticCostModel._make_decode_run_pricer): step j's end into
    out[0, j] and its duration into out[1, j]; returns the number of steps priced (it stops after
    the first that ends at or after `horizon_s`)."""
    end = start_s
    for j in range(num_steps):
        attention_s = (context_sum_tokens * kv_bytes_per_token + q_bytes) / bytes_per_s
        compute_s = context_sum_tokens * flops_per_pair / flops_per_s
        if compute_s > attention_s:
            attention_s = compute_s
        if floor_s > attention_s:
            attention_s = floor_s
        d = fixed_s + layers * attention_s
        end += d
        out[0, j] = end
        out[1, j] = d
        if end >= horizon_s:
            return j + 1
        context_sum_tokens += decode_seqs
    return num_steps


def decode_run_times():
    """The compiled `_decode_run_times`, or None where the compiled kernels may not be used."""
    global _kernel
    if _kernel is None:
        from ..schedulers import _compiled

        if not _compiled.available():
            return None
        from numba import njit

        _kernel = njit(cache=True, nogil=True)(_decode_run_times)
    return _kernel
