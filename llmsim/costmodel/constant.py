"""A trivial cost model for queueing tests: every step takes a fixed time plus a per-token time.

step time (s) = step_time_s + per_token_s x tokens in the step (prefill chunk tokens plus one per
decoding sequence). Context lengths do not matter. Swapping is free unless a host link rate in
GB/s (1e9 bytes/s) is given.
"""

from __future__ import annotations

import math

from llmsim.costmodel.base import BatchShape
from llmsim.errors import LlmsimError


class ConstantCostModel:
    """CostModel with step time = step_time_s + per_token_s x tokens."""

    def __init__(
        self, step_time_s: float, per_token_s: float = 0.0, host_link_gb_per_s: float | None = None
    ) -> None:
        for label, value in (("step_time_s", step_time_s), ("per_token_s", per_token_s)):
            if not math.isfinite(value) or value < 0:
                raise LlmsimError(f"constant cost model: {label} must be a finite number >= 0, got {value}")
        if host_link_gb_per_s is not None and not host_link_gb_per_s > 0:
            raise LlmsimError(f"constant cost model: host_link_gb_per_s must be > 0, got {host_link_gb_per_s}")
        # Stored under other names: `step_time_s` is the interface method.
        self.base_step_s = float(step_time_s)
        self.per_token_s = float(per_token_s)
        self.host_link_gb_per_s = host_link_gb_per_s
        self._run_pricers: dict = {}  # decode_run_fn's pricers, by sequence count (one lookup a run)

    def __repr__(self) -> str:
        return f"ConstantCostModel(step_time_s={self.base_step_s}, per_token_s={self.per_token_s})"

    def step_time_s(self, shape: BatchShape) -> float:
        tokens = sum(shape.prefill_chunk_tokens) + shape.decode_seqs
        if tokens <= 0:
            return 0.0
        return self.base_step_s + self.per_token_s * tokens

    def decode_run_fn(self, decode_seqs: int):
        """costmodel/decode_run.py's run pricer for `decode_seqs` sequences: every step of a run
        costs what `step_time_s` gives a decode-only step of them (context does not matter here),
        computed once, its ends summed one step at a time. A speed layer, as the analytic model's:
        building a BatchShape per step made constant-model runs about 40 % slower than at 91c1e79
        (docs/performance.md), and a cached per-step function priced through decode_run.py's own
        loop is 5 % slower over a whole simulation than this loop (aggressive, 100k requests,
        bench_same_system.py at 4.2 req/s: 4.56 against 4.32 s, medians of 4 alternating pairs).
        tests/test_costmodel.py checks it bit for bit against that loop."""
        run = self._run_pricers.get(decode_seqs)
        if run is None:
            run = self._run_pricers[decode_seqs] = self._run_pricer(decode_seqs)
        return run

    def _run_pricer(self, decode_seqs: int):
        step_s = self.step_time_s(BatchShape((), (), decode_seqs, 0, 0))

        def run(start_s: float, context_sum_tokens: int, context_max_tokens: int, num_steps: int,
                horizon_s: float) -> tuple[list[float], list[float]]:
            ends: list[float] = []
            end = start_s
            for _ in range(num_steps):
                end += step_s  # sequential sums, as step-by-step mode's clock adds each step
                ends.append(end)
                if end >= horizon_s:
                    break
            return ends, [step_s] * len(ends)
        return run

    def swap_time_s(self, num_bytes_per_gpu: float) -> float:
        if self.host_link_gb_per_s is None:
            return 0.0
        return num_bytes_per_gpu / (self.host_link_gb_per_s * 1e9)
