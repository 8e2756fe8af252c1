"""Price each reference point with llmsim's cost model and compare with the published time.

`compare(points)` builds the cost model the way `llmsim step-time --overheads PRESET` does
(`cost_model_for(model, profile, tp)` from the catalog model and the named hardware profile), with
the engine-overhead preset of the row's engine (the CSV's `overheads` column: gpt-fast, a bare
generation loop replaying CUDA graphs with no scheduler, `kernels-only`; rows launched eagerly
`eager`; serving engines `cuda-graph`, the profiles' default), and prices the row's phase:

- prefill: one step of `batch` fresh prompts of `prompt_tokens` each;
- decode: one step of `batch` sequences at `context_tokens` (each new token attends to
  context + 1, as `step-time --decode` counts it);
- request: that prefill step, then `output_tokens - 1` decode steps of the whole batch with the
  context growing by one per step, priced by `price_decode_run` (the helper the simulator's
  fast-forward uses), as a static batch runs in an offline benchmark.

`summarise(results)` gives the median and worst |error| per regime tag. Error is signed:
(predicted - measured) / measured, so negative means llmsim is too fast. Units: seconds in,
seconds out; errors are fractions (x100 for %).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from llmsim.costmodel import BatchShape, CostModel, load_model, load_profile
from llmsim.costmodel.decode_run import price_decode_run
from llmsim.costmodel.tables import cost_model_for
from llmsim.validation.reference import ReferencePoint


@dataclass(frozen=True)
class Comparison:
    """One reference point, llmsim's price for it, and the regime tags it counts under."""

    point: ReferencePoint
    predicted_s: float
    tags: tuple[str, ...]

    @property
    def error(self) -> float:
        """Signed relative error of the prediction: (predicted - measured) / measured."""
        return (self.predicted_s - self.point.measured_s) / self.point.measured_s


def regime_tags(point: ReferencePoint, is_moe: bool) -> tuple[str, ...]:
    """The regimes a row belongs to: engine kind, phase, dense/MoE, TP 1 or more, GPU."""
    return (f"engine:{point.engine_kind}", f"phase:{point.phase}", "moe" if is_moe else "dense",
            "tp=1" if point.tp == 1 else "tp>1", f"gpu:{point.gpu}")


def _prefill_shape(batch: int, prompt_tokens: int) -> BatchShape:
    return BatchShape((prompt_tokens,) * batch, (0,) * batch)


def price_point(cm: CostModel, point: ReferencePoint) -> float:
    """Seconds llmsim predicts for the row's phase (see the module docstring)."""
    if point.phase == "decode":
        ctx = point.context_tokens + 1  # type: ignore[operator]  # the new token attends to itself
        return cm.step_time_s(BatchShape(decode_seqs=point.batch, decode_context_sum_tokens=point.batch * ctx,
                                         decode_context_max_tokens=ctx))
    prefill_s = cm.step_time_s(_prefill_shape(point.batch, point.prompt_tokens))  # type: ignore[arg-type]
    if point.phase == "prefill":
        return prefill_s
    # After the prefill the KV holds the prompt; decode step j (1-based) attends to prompt + j.
    first_ctx = point.prompt_tokens + 1  # type: ignore[operator]
    _, durations = price_decode_run(cm, point.batch, 0.0, point.batch * first_ctx, first_ctx,
                                    point.output_tokens - 1, float("inf"))  # type: ignore[operator]
    return prefill_s + sum(durations)


def compare(points: list[ReferencePoint], profile_dirs: tuple[Path, ...] = ()) -> list[Comparison]:
    """Each point priced by the cost model of its (model, GPU profile, TP), in input order."""
    models: dict[str, object] = {}
    profiles: dict[tuple[str, str], object] = {}
    cost_models: dict[tuple[str, str, int, str], CostModel] = {}
    out = []
    for p in points:
        if p.model not in models:
            models[p.model] = load_model(p.model)
        model = models[p.model]
        preset = p.overheads
        if (p.gpu, preset) not in profiles:
            profile = load_profile(p.gpu, profile_dirs)
            # the preset replaces the profile's own overhead numbers, as step-time --overheads does
            profiles[p.gpu, preset] = profile.model_copy(update={"overheads": type(profile.overheads)(preset=preset)})
        key = (p.model, p.gpu, p.tp, preset)
        if key not in cost_models:
            cost_models[key] = cost_model_for(model, profiles[p.gpu, preset], p.tp)  # type: ignore[arg-type]
        out.append(Comparison(p, price_point(cost_models[key], p), regime_tags(p, model.is_moe)))  # type: ignore[attr-defined]
    return out


@dataclass(frozen=True)
class RegimeSummary:
    """Median and worst |error| of the rows of one regime; `median_error` keeps the sign."""

    regime: str
    rows: int
    median_abs_error: float
    worst_error: float  # the signed error of largest magnitude
    median_error: float


def _summary(regime: str, results: list[Comparison]) -> RegimeSummary:
    errors = [r.error for r in results]
    return RegimeSummary(regime, len(errors), statistics.median(abs(e) for e in errors), max(errors, key=abs),
                         statistics.median(errors))


def summarise(results: list[Comparison]) -> list[RegimeSummary]:
    """One summary over all rows, then one per regime tag in a stable order."""
    tags = sorted({t for r in results for t in r.tags})
    return [_summary("all", results)] + [_summary(t, [r for r in results if t in r.tags]) for t in tags]


def format_rows(results: list[Comparison]) -> str:
    """A Markdown table, one line per reference point."""
    lines = ["| id | model | gpu | TP | phase | batch | prompt/ctx | out | measured ms | predicted ms | error |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r.point
        sizes = p.context_tokens if p.phase == "decode" else p.prompt_tokens
        lines.append(f"| {p.id} | {p.model} | {p.gpu} | {p.tp} | {p.phase} | {p.batch} | {sizes} | {p.output_tokens or ''} | "
                     f"{p.measured_s * 1e3:.2f} | {r.predicted_s * 1e3:.2f} | {r.error:+.1%} |")
    return "\n".join(lines)


def format_summary(summaries: list[RegimeSummary]) -> str:
    """A Markdown table of the per-regime summaries."""
    lines = ["| regime | rows | median abs error | median signed error | worst error |", "|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.regime} | {s.rows} | {s.median_abs_error:.1%} | {s.median_error:+.1%} | {s.worst_error:+.1%} |")
    return "\n".join(lines)
