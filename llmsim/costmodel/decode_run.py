"""Price a run of consecutive decode-only steps: the one helper fast-forward uses.

A run is k decode steps of the same `decode_seqs` sequences; step j (0-based) has context sum
`context_sum_tokens + j * decode_seqs` and context max `context_max_tokens + j`. Each step costs
exactly what `CostModel.step_time_s` charges for that shape, because it is priced by the cost
model's own decode formula: `decode_step_fn(decode_seqs)` where the model offers it (the function
its `step_time_s` itself calls for a decode-only shape: composed.py), otherwise `step_time_s` of
a built `BatchShape`. Ends are summed one step at a time from `start_s`, as step-by-step mode's
clock adds each step, so a run's timestamps are the same bits as the steps taken one by one.

A model may also price a whole run in one call, `decode_run_fn(decode_seqs)` (analytic.py, through
roofline_run.py: this loop with its step formula written inside, so no call per step, run by
Python and, once enough steps are priced, compiled by numba from the same function; constant.py:
one step price summed): a speed layer that must give `price_decode_run`'s loop below bit for bit
(tests/test_costmodel.py and tests/test_roofline_run.py, `check_run_pricer`); without it the
results are the same. Fast-forward prices a few to 32 steps per run (docs/performance.md).

Units: seconds, tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import BatchShape, CostModel

DecodeStepFn = Callable[[int, int], float]  # (context sum, context max) -> seconds


def decode_step_fn(cost_model: CostModel, decode_seqs: int) -> DecodeStepFn:
    """The time of one decode-only step of `decode_seqs` sequences, as a function of its context
    sum and max (tokens attended, each sequence's new token included)."""
    own = getattr(cost_model, "decode_step_fn", None)
    if own is not None:
        return own(decode_seqs)
    step_time_s = cost_model.step_time_s

    def step_s(context_sum_tokens: int, context_max_tokens: int) -> float:
        return step_time_s(BatchShape((), (), decode_seqs, context_sum_tokens, context_max_tokens))

    return step_s


def price_decode_run(cost_model: CostModel, decode_seqs: int, start_s: float, context_sum_tokens: int,
                     context_max_tokens: int, num_steps: int, horizon_s: float) -> tuple[list[float], list[float]]:
    """(ends, durations) of up to `num_steps` decode steps starting at `start_s`, stopping after the
    first step that ends at or after `horizon_s`."""
    own = getattr(cost_model, "decode_run_fn", None)
    run = None if own is None else own(decode_seqs)
    if run is not None:
        return run(start_s, context_sum_tokens, context_max_tokens, num_steps, horizon_s)
    step_s = decode_step_fn(cost_model, decode_seqs)
    ends: list[float] = []
    durations: list[float] = []
    add_end, add_duration = ends.append, durations.append  # bound once: this loop runs per priced step
    end = start_s
    context_sum = context_sum_tokens
    for context_max in range(context_max_tokens, context_max_tokens + num_steps):
        d = step_s(context_sum, context_max)
        context_sum += decode_seqs
        end += d  # sequential sums, as step-by-step mode's clock adds each step
        add_end(end)
        add_duration(d)
        if end >= horizon_s:
            break
    return ends, durations
