"""The composition of one iteration's time, shared by every cost model (docs/cost-model.md §1).

    t_step = per-token parts (GEMMs, elementwise, communication; depend on new tokens T only)
           + per-sequence parts (LM head; engine overheads: per step, per sequence, and sampling
             n x vocab x bytes per logit as one elementwise kernel; depend on sequences n only)
           + layers x (prefill attention + decode attention)

`ComposedCostModel` caches the per-token and per-sequence parts by their integer key and composes
them; a subclass says how long the kernels take: `_per_token_parts(T)`, `_lm_head_s(n)`,
`_elem_s(bytes)`, `_prefill_attention_s(chunks, prefixes)` and `_decode_attention_s(n, context_sum)`. A decode-only
step is priced by `decode_step_fn(n)` (built once per n by `_decode_step_formula`, which a subclass
may specialise with the same arithmetic), which `step_time_s` calls too, and which fast-forward's
run pricer (decode_run.py) loops over: one formula, so a fast-forwarded run costs exactly what its
steps cost one by one. All times are seconds.
"""

from __future__ import annotations

from llmsim.costmodel.base import BatchShape
from llmsim.costmodel.decode_run import DecodeStepFn
from llmsim.costmodel.overheads import EngineOverheads

COMPONENTS = ("gemm", "attention", "elementwise", "communication", "overheads")


class ComposedCostModel:
    """Base of AnalyticCostModel and TableCostModel: caching and composition, no kernel timings."""

    _layers: int
    overheads: EngineOverheads

    def _init_caches(self) -> None:
        self.overheads = self.profile.overheads.resolved()  # the preset and the profile's overrides
        self._vocab = self.model.vocab_size  # sampling reads the full (gathered) logits on one GPU
        self._per_token_cache: dict[int, tuple[float, float, float]] = {}
        self._per_seq_cache: dict[int, tuple[float, float]] = {}
        self._decode_fixed_cache: dict[int, float] = {}
        self._lone_prefill_cache: dict[int, float] = {}  # step time of one fresh prompt's prefill, by length
        self._decode_fn_cache: dict[int, DecodeStepFn] = {}  # decode-only step formulas, by sequence count
        self._decode_attention_cache: dict[int, DecodeStepFn] = {}  # one layer's decode attention, by sequence count

    # ----- hooks -----
    def _per_token_parts(self, tokens: int) -> tuple[float, float, float]:
        """(GEMM, elementwise, communication) seconds of a step with `tokens` new tokens (cached)."""
        raise NotImplementedError

    def _lm_head_s(self, seqs: int) -> float:
        raise NotImplementedError

    def _elem_s(self, num_bytes: float) -> float:
        """One memory-bound elementwise kernel moving `num_bytes`."""
        raise NotImplementedError

    def _prefill_attention_s(self, chunks: tuple[int, ...], prefixes: tuple[int, ...]) -> float:
        raise NotImplementedError

    def _decode_attention_s(self, seqs: int, context_sum_tokens: int) -> float:
        raise NotImplementedError

    # ----- composition -----
    def _per_seq_parts(self, seqs: int) -> tuple[float, float]:
        """(LM-head GEMM, engine overheads) seconds for `seqs` sequences; the overheads include
        sampling, `seqs` x vocab x bytes per logit moved as one elementwise kernel."""
        parts = self._per_seq_cache.get(seqs)
        if parts is None:
            o = self.overheads
            sampling_bytes = seqs * self._vocab * o.sampling_bytes_per_logit
            sampling_s = self._elem_s(sampling_bytes) if sampling_bytes > 0 else 0.0
            parts = self._per_seq_cache[seqs] = (self._lm_head_s(seqs), o.step_s + o.per_seq_s * seqs + sampling_s)
        return parts

    def _fixed_s(self, tokens: int, seqs: int) -> float:
        """Everything but attention: depends only on token and sequence counts."""
        gemm_t, elem_t, comm_t = self._per_token_parts(tokens)
        gemm_n, over_n = self._per_seq_parts(seqs)
        return (gemm_t + gemm_n) + elem_t + comm_t + over_n

    def _decode_fixed_s(self, decode_seqs: int) -> float:
        fixed = self._decode_fixed_cache.get(decode_seqs)
        if fixed is None:
            fixed = self._decode_fixed_cache[decode_seqs] = self._fixed_s(decode_seqs, decode_seqs)
        return fixed

    def step_time_s(self, shape: BatchShape) -> float:
        chunks = shape.prefill_chunk_tokens
        decode_seqs = shape.decode_seqs
        if not chunks:  # decode-only fast path: one cache lookup and the attention formula
            fn = self._decode_fn_cache.get(decode_seqs)  # inlined decode_step_fn: once per simulated step
            if fn is None:
                fn = self.decode_step_fn(decode_seqs)
            return fn(shape.decode_context_sum_tokens, shape.decode_context_max_tokens)
        if decode_seqs <= 0 and len(chunks) == 1 and not any(shape.prefill_prefix_tokens):
            # a lone prefill of a fresh prompt (most separate-mode prefill steps): a function of its
            # length alone, so cached (the same arithmetic once per length, the same bits)
            step_s = self._lone_prefill_cache.get(chunks[0])
            if step_s is None:
                step_s = self._lone_prefill_cache[chunks[0]] = self._mixed_step_s(chunks, shape.prefill_prefix_tokens, 0, 0)
            return step_s
        return self._mixed_step_s(chunks, shape.prefill_prefix_tokens, decode_seqs, shape.decode_context_sum_tokens)

    def _mixed_step_s(self, chunks: tuple[int, ...], prefixes: tuple[int, ...], decode_seqs: int, context_sum_tokens: int) -> float:
        """A step with prefill chunks (and maybe decode tokens)."""
        attn = self._prefill_attention_s(chunks, prefixes)
        if decode_seqs > 0:
            attn += self._decode_attention_s(decode_seqs, context_sum_tokens)
        return self._fixed_s(sum(chunks) + decode_seqs, len(chunks) + decode_seqs) + self._layers * attn

    def decode_step_fn(self, decode_seqs: int) -> DecodeStepFn:
        """The time of a decode-only step of `decode_seqs` sequences as a function of its context
        sum and max: what `step_time_s` charges for that shape (it calls this), and what
        decode_run.py prices a fast-forwarded run with. Cached by sequence count."""
        fn = self._decode_fn_cache.get(decode_seqs)
        if fn is None:
            if decode_seqs <= 0:
                def fn(context_sum_tokens: int, context_max_tokens: int) -> float:
                    return 0.0
            else:
                fn = self._decode_step_formula(decode_seqs, self._decode_fixed_s(decode_seqs), self._layers)
            self._decode_fn_cache[decode_seqs] = fn
        return fn

    def _decode_step_formula(self, seqs: int, fixed_s: float, layers: int) -> DecodeStepFn:
        """fixed_s + layers x `_decode_attention_s(seqs, context sum)`, as a function of (context sum,
        context max). A subclass may bind its attention's constants for `seqs` into one closure
        (analytic.py: one Python call per priced step instead of four), with the same arithmetic."""
        attention = self._decode_attention_s

        def fn(context_sum_tokens: int, context_max_tokens: int) -> float:
            return fixed_s + layers * attention(seqs, context_sum_tokens)
        return fn

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Seconds per component (gemm, attention, elementwise, communication, overheads); the
        values sum to `step_time_s(shape)` up to floating-point rounding."""
        chunks, decode_seqs = shape.prefill_chunk_tokens, shape.decode_seqs
        tokens, seqs = sum(chunks) + decode_seqs, len(chunks) + decode_seqs
        if tokens <= 0:
            return dict.fromkeys(COMPONENTS, 0.0)
        attn = self._prefill_attention_s(chunks, shape.prefill_prefix_tokens) if chunks else 0.0
        if decode_seqs > 0:
            attn += self._decode_attention_s(decode_seqs, shape.decode_context_sum_tokens)
        gemm_t, elem_t, comm_t = self._per_token_parts(tokens)
        gemm_n, over_n = self._per_seq_parts(seqs)
        return {"gemm": gemm_t + gemm_n, "attention": self._layers * attn, "elementwise": elem_t, "communication": comm_t, "overheads": over_n}
