"""Engine overheads: time a serving engine spends outside the model's GPU kernels, as named presets.

One step of an engine costs, besides its kernels (docs/cost-model.md §1),

    step_s                                   per step: scheduling, input preparation, launch gaps
  + per_seq_s x n                            per sequence: block tables, output processing, detokenising
  + n x vocab x sampling_bytes_per_logit / elementwise bandwidth
                                             sampling: temperature, softmax, top-k/top-p over fp32 logits

A profile's `overheads` section names a preset (`preset: cuda-graph`) and may override any of its
three numbers; a scenario can do the same (`cost_model: {kind: analytic, overhead_preset: eager}`).
`resolve` merges preset and overrides into `EngineOverheads`, whose `name` is what `llmsim
step-time` prints. Units: seconds, bytes per logit.

Sources for the presets (read them before relying on a number):
- cuda-graph: engines that replay CUDA graphs and overlap scheduling with the GPU (vLLM >= 0.6 / V1,
  SGLang, TensorRT-LLM). Issue 23's fit to public step latencies (gpt-fast, TensorRT-LLM, SGLang,
  vLLM PRs) found ~0.8 ms per step outside kernels; a profile of vLLM's step loop without a GPU
  measured 541 us per step amortised (openfabric-systems/simllm PR #204). Per sequence: vLLM V1's
  `update_from_output` alone costs 1.1 us per request at batch 256 (vllm-project/vllm PR #46112) and
  the scheduler 12.7 us per request at its cap (simllm PR #204): 10 us. Sampling: FlashInfer's
  sorting-free top-k/top-p kernels read the fp32 logits a few times (softmax, then rejection rounds;
  flashinfer.ai/2025/03/10/sampling.html): ~24 bytes per logit.
- eager: kernels launched from Python each step (no CUDA graphs) or a synchronous scheduler. The
  cost grows with the kernels per step and how little GPU time hides it: SGLang 0.3 without CUDA
  graphs added 0.9 to 2.2 ms per Llama-3.1-8B batch-1 decode step on H100 (sgl-project/sglang
  PR #1401); enabling CUDA graphs took a 7B decode from ~22 to ~13 ms TPOT on A800
  (vllm-project/vllm-omni issue #7960); vLLM 0.5 left 5 to 13 ms of GPU bubble per decode step
  (vllm-project/vllm issue #6854). 3 ms per step is the low end for a 7-8B model; set `step_s`
  for a deeper model or an older stack. vLLM 0's
  `_process_model_outputs` took 3.4 ms at batch 32 (vllm-project/vllm issue #6913): 40 us per
  sequence. Sort-based top-p in PyTorch (radix sort of keys and int64 indices, cumsum, scatter) moves
  ~128 bytes per logit; the old sampler was 8.5% of model time on Llama-70B (vllm PR #818).
- kernels-only: no engine at all (a compiled generate loop such as gpt-fast, or kernel timings):
  zeros, so a step is its kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.errors import LlmsimError, did_you_mean


@dataclass(frozen=True)
class EngineOverheads:
    """Resolved engine overheads: seconds per step and per sequence, bytes per sampled logit."""

    name: str  # the preset, with "+overrides" when some numbers were replaced
    step_s: float
    per_seq_s: float
    sampling_bytes_per_logit: float


PRESETS: dict[str, EngineOverheads] = {
    "cuda-graph": EngineOverheads("cuda-graph", 0.0008, 0.00001, 24.0),
    "eager": EngineOverheads("eager", 0.003, 0.00004, 128.0),
    "kernels-only": EngineOverheads("kernels-only", 0.0, 0.0, 0.0),
}
DEFAULT_PRESET = "cuda-graph"  # what a profile without a preset (and without numbers) gets


def resolve(preset: str | None, step_s: float | None = None, per_seq_s: float | None = None,
            sampling_bytes_per_logit: float | None = None, where: str = "overheads") -> EngineOverheads:
    """The preset's numbers with any given ones replacing them; `preset` None is `DEFAULT_PRESET`
    (named `custom` when both per-step and per-sequence times are given explicitly)."""
    if preset is not None and preset not in PRESETS:
        raise LlmsimError(f"{where}: unknown overhead preset '{preset}'{did_you_mean(preset, PRESETS)}; known: {', '.join(sorted(PRESETS))}")
    base = PRESETS[preset or DEFAULT_PRESET]
    given = {k: v for k, v in (("step_s", step_s), ("per_seq_s", per_seq_s),
                               ("sampling_bytes_per_logit", sampling_bytes_per_logit)) if v is not None}
    if not given:
        return base
    if preset is None and step_s is not None and per_seq_s is not None:
        name = "custom"
    else:
        name = f"{base.name}+overrides"
    merged = {"step_s": base.step_s, "per_seq_s": base.per_seq_s,
              "sampling_bytes_per_logit": base.sampling_bytes_per_logit, **given}
    return EngineOverheads(name, **merged)
