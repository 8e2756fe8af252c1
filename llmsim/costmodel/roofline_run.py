"""The analytic model's decode-run pricer: one loop, run by Python or compiled by numba once a
simulation has priced enough steps.

A run is k decode steps of the same `seqs` sequences (decode_run.py's contract): step j attends
context sum `context_sum_tokens + j * seqs` and costs

    fixed_s + layers x max(launch_s + sqrt(c^2 + m^2), floor_s),
    c = context sum x FLOPs per token / FLOP/s,  m = (context sum x KV bytes + q bytes) / bytes/s

(analytic.py's decode attention at roofline p = 2, the smooth roofline of roofline.py), and the
ends are summed one step at a time from the run's start, as step-by-step mode's clock adds each
step. `roofline_decode_run` is that loop, written once: interpreted, it reads the constants from
a tuple and writes into two preallocated Python lists; compiled (numba's `njit` of the same
function, `cache=True`), from an array into two numpy arrays. Both perform the same IEEE
operations in the same order (no fast-math, no fused multiply-add, sqrt correctly rounded in
both), so they return the same bits; tests/test_roofline_run.py checks that on random runs.

Why two ways to run it: priced in Python, a run of 2 / 5 / 16 steps costs 0.98 / 1.71 / 3.82 us;
compiled, 1.10 / 1.16 / 1.45 us (call and conversion, then a few ns a step): about 4.5 % of a
64-replica simulation's time. But starting numba costs 0.3 to 0.5 s and 100 MiB (its import,
about 0.2 s, then its compiler's set-up at the first call, about 0.1 s; more on a busy machine),
which a short simulation of a scheduler that loads no kernel (aggressive) would pay for nothing;
where a policy's kernels (llmsim.schedulers._compiled) already run, loading this one from
numba's cache costs about 0.05 s. So a cost model's pricers run the loop in Python until it has
priced `COMPILE_AFTER_STEPS` steps, or only `COMPILE_AFTER_STEPS_IF_LOADED` if numba is imported
by then (by whatever module), and compiled from then on (`RunPricers`). The switch changes no
result: it is a speed layer, removable by setting both to None.

Units: seconds, tokens, bytes, FLOPs.
"""

from __future__ import annotations

import math
import sys
from math import sqrt

import numpy as np

# Steps priced by one cost model before its runs are priced by the compiled loop (None: never),
# so that what starting it costs is paid back within a simulation that goes on about as long
# again (about 0.3 us saved a priced step, aggressive on 64 replicas, 2026-12-05): numba not yet
# imported (0.3 to 0.5 s), and imported already (0.05 s to load this loop)
COMPILE_AFTER_STEPS: int | None = 1_000_000
COMPILE_AFTER_STEPS_IF_LOADED: int | None = 100_000
BUFFER_STEPS = 1_024  # steps the output buffers hold at first (fast-forward prices up to 32 a run, mostly)


def roofline_decode_run(consts, start_s, context_sum_tokens, num_steps, horizon_s, ends, durations):
    """Write the ends and durations of up to `num_steps` decode steps starting at `start_s` into
    `ends[:k]`, `durations[:k]`, stopping after the first end at or after `horizon_s`; return k.
    `consts` = (fixed_s, layers, seqs, FLOPs per token, FLOP/s, KV bytes per token, q bytes,
    bytes/s, launch_s, floor_s), as floats (whole numbers where they count things: exact)."""
    fixed_s, layers, seqs, flops_per_token, flops_per_s, kv_bytes, q_bytes, bytes_per_s, launch_s, floor_s = consts
    end = start_s
    context_sum = float(context_sum_tokens)  # whole tokens: exact, as are its products below
    k = 0
    while k < num_steps:
        c = context_sum * flops_per_token / flops_per_s
        m = (context_sum * kv_bytes + q_bytes) / bytes_per_s
        t = launch_s + sqrt(c * c + m * m)
        d = fixed_s + layers * (t if t > floor_s else floor_s)
        context_sum += seqs
        end += d  # sequential sums, as step-by-step mode's clock adds each step
        ends[k] = end
        durations[k] = d
        k += 1
        if end >= horizon_s:
            break
    return k


class RunPricers:
    """The run pricers of one cost model, by sequence count (decode_run.py's `decode_run_fn`):
    the loop above in Python until `COMPILE_AFTER_STEPS` steps are priced (or
    `COMPILE_AFTER_STEPS_IF_LOADED` with numba imported), then compiled."""

    def __init__(self, consts_of) -> None:
        self._consts_of = consts_of  # seqs -> the loop's constants tuple
        self._pricers: dict = {}
        # the step counts at which to switch, numba imported or not (read now: tests set them)
        self._after_if_loaded = math.inf if COMPILE_AFTER_STEPS_IF_LOADED is None else COMPILE_AFTER_STEPS_IF_LOADED
        self._after = math.inf if COMPILE_AFTER_STEPS is None else COMPILE_AFTER_STEPS
        self._priced = 0  # steps priced by the interpreted loop
        self._next_look = min(self._after_if_loaded, self._after)  # when to look whether to switch
        self.compiled = False
        # where the loop writes a run's ends and durations, shared by every pricer of this cost
        # model (a run is copied out before the next is priced), grown for a longer run:
        # Python lists for the interpreted loop, numpy arrays for the compiled one
        self._lists: tuple[list[float], list[float]] = ([0.0] * BUFFER_STEPS, [0.0] * BUFFER_STEPS)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        if self._next_look <= 0:
            self._look()  # compiled from the first run (tests)

    def get(self, seqs: int):
        run = self._pricers.get(seqs)
        if run is None:
            run = self._pricers[seqs] = (self._compiled if self.compiled else self._interpreted)(self._consts_of(seqs))
        return run

    def _interpreted(self, consts: tuple):
        def run(start_s: float, context_sum_tokens: int, context_max_tokens: int, num_steps: int,
                horizon_s: float) -> tuple[list[float], list[float]]:
            ends, durations = self._lists
            if num_steps > len(ends):
                ends, durations = self._lists = ([0.0] * num_steps, [0.0] * num_steps)
            k = roofline_decode_run(consts, start_s, context_sum_tokens, num_steps, horizon_s, ends, durations)
            self._priced += k
            if self._priced >= self._next_look:
                self._look()
            return ends[:k], durations[:k]
        return run

    def _compiled(self, consts: tuple):
        loop = compiled_loop()
        consts = np.array(consts)  # numba unpacks an array as the tuple; takes it 0.1 us faster a call

        def run(start_s: float, context_sum_tokens: int, context_max_tokens: int, num_steps: int,
                horizon_s: float) -> tuple[list[float], list[float]]:
            ends, durations = self._arrays
            if num_steps > len(ends):  # the compiled loop does not check bounds: never past the end
                ends, durations = self._arrays = (np.empty(num_steps), np.empty(num_steps))
            k = loop(consts, start_s, context_sum_tokens, num_steps, horizon_s, ends, durations)
            return ends[:k].tolist(), durations[:k].tolist()
        return run

    def _look(self) -> None:
        """The first count is reached: switch if numba is imported by now or the long count is
        reached too, else look again at the long count."""
        if self._priced >= self._after or numba_imported():  # _priced >= _after_if_loaded here
            self._switch()
        else:
            self._next_look = self._after

    def _switch(self) -> None:
        """From now on, `get` hands out pricers that run the compiled loop."""
        self.compiled = True
        self._next_look = math.inf
        self._arrays = (np.empty(BUFFER_STEPS), np.empty(BUFFER_STEPS))
        self._pricers.clear()


def numba_imported() -> bool:
    """Whether some module has imported numba already (then starting it costs little more)."""
    return "numba" in sys.modules


_COMPILED = None


def compiled_loop():
    """`roofline_decode_run` compiled by numba (imported here, on first use)."""
    global _COMPILED
    if _COMPILED is None:
        from numba import njit

        _COMPILED = njit(cache=True)(roofline_decode_run)
    return _COMPILED
