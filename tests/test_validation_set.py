"""The cost model's validation set (llmsim/validation, docs/validation.md).

Checks that every public reference point loads and is priceable, that malformed rows are refused
with the file, line and field named, that a request is priced as its prefill plus its decode steps,
and that the median |error| of the shipped analytic profiles on the set stays within a band around
the value measured when the set was written.
"""

from __future__ import annotations

import math

import pytest

from llmsim.costmodel import BatchShape, load_model, load_profile
from llmsim.costmodel.tables import cost_model_for
from llmsim.errors import LlmsimError
from llmsim.validation import (
    DEFAULT_CSV,
    compare,
    load_reference_points,
    price_point,
    summarise,
)
from llmsim.validation.reference import COLUMNS

# Median |error| per regime of the shipped analytic profiles, measured on 2026-12-04 with
# `python benchmarks/validation_table.py` (the table in docs/validation.md), for every regime with
# at least 5 rows. A cost-model or profile change that moves a value out of its band must update
# these numbers AND the tables in docs/validation.md (paste the new output), saying why in the
# commit: the band is a tripwire for unnoticed drift, not a target.
MEASURED_MEDIAN_ABS_ERROR = {
    "all": 0.0748,
    "dense": 0.0602,
    "engine:eager": 0.2056,
    "engine:graph": 0.0637,
    "gpu:a100-80g-sxm": 0.0760,
    "gpu:h100-80g-sxm": 0.0692,
    "moe": 0.1423,
    "phase:decode": 0.1185,
    "phase:prefill": 0.0772,
    "phase:request": 0.0537,
    "tp=1": 0.0692,
    "tp>1": 0.0760,
}
BAND = 0.03  # +- 3 points of |error|


@pytest.fixture(scope="module")
def results():
    return compare(load_reference_points())


def test_shipped_set_has_enough_sourced_rows(results):
    assert len(results) >= 30
    assert len({r.point.id for r in results}) == len(results)
    for r in results:
        p = r.point
        assert p.source_url.startswith("https://") and p.source_detail and p.date, p.id
        assert math.isfinite(r.predicted_s) and r.predicted_s > 0, p.id
        assert p.measured_s > 0, p.id


def test_median_error_per_regime_stays_in_band(results):
    summaries = {s.regime: s for s in summarise(results)}
    big = {name for name, s in summaries.items() if s.rows >= 5}
    assert big == set(MEASURED_MEDIAN_ABS_ERROR), "regimes with >= 5 rows changed: update MEASURED_MEDIAN_ABS_ERROR and docs/validation.md"
    for name, measured in MEASURED_MEDIAN_ABS_ERROR.items():
        got = summaries[name].median_abs_error
        assert abs(got - measured) <= BAND, f"{name}: median |error| {got:.1%}, was {measured:.1%} (update docs/validation.md)"


def test_request_is_its_prefill_plus_each_decode_step(tmp_path):
    """A 2-sequence request of 100-token prompts and 3 output tokens: one prefill step, then decode
    steps attending to 101 and 102 tokens per sequence."""
    path = _write(tmp_path, _row(phase="request", batch="2", prompt_tokens="100", output_tokens="3", measured="1", measured_unit="s"))
    point = load_reference_points(path)[0]
    cm = cost_model_for(load_model("llama-2-7b"), load_profile("a100-80g-sxm"), 1)
    expected = cm.step_time_s(BatchShape((100, 100), (0, 0)))
    for ctx in (101, 102):
        expected += cm.step_time_s(BatchShape(decode_seqs=2, decode_context_sum_tokens=2 * ctx, decode_context_max_tokens=ctx))
    assert price_point(cm, point) == pytest.approx(expected, rel=1e-12)


def test_published_units_convert_to_seconds(tmp_path):
    rows = [_row(id="a", phase="request", batch="4", prompt_tokens="10", output_tokens="50", measured="100", measured_unit="tokens_per_s"),
            _row(id="b", measured="250", measured_unit="ms")]
    a, b = load_reference_points(_write(tmp_path, *rows))
    assert a.measured_s == pytest.approx(4 * 50 / 100)
    assert b.measured_s == pytest.approx(0.25)


@pytest.mark.parametrize("change, field", [
    ({"phase": "train"}, "phase"),
    ({"batch": "0"}, "batch"),
    ({"batch": "2.5"}, "batch"),
    ({"measured": "-3"}, "measured"),
    ({"measured_unit": "tokens_per_s"}, "measured_unit"),  # only defined for a request
    ({"model": "llama-9"}, "model"),
    ({"gpu": "tpu-v5"}, "gpu"),
    ({"tp": "3"}, "tp"),  # does not divide Llama-2-7B's 32 heads
    ({"date": "last year"}, "date"),
    ({"source_url": "see paper"}, "source_url"),
    ({"context_tokens": "", "phase": "decode"}, "context_tokens"),
    ({"output_tokens": "", "phase": "request"}, "output_tokens"),
    ({"overheads": "fast"}, "overheads"),  # not a preset of llmsim/costmodel/overheads.py
])
def test_malformed_row_names_line_and_field(tmp_path, change, field):
    path = _write(tmp_path, _row(id="good"), _row(id="bad", **change))
    with pytest.raises(LlmsimError, match=rf"{path.name}:4: {field}:"):
        load_reference_points(path)


def test_duplicate_ids_and_bad_headers_are_refused(tmp_path):
    with pytest.raises(LlmsimError, match=r":4: id: 'x' already used on line 3"):
        load_reference_points(_write(tmp_path, _row(id="x"), _row(id="x")))
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("id,source_url\n", encoding="utf-8")
    with pytest.raises(LlmsimError, match=r"header.csv:1: header .* missing: .*measured"):
        load_reference_points(bad_header)
    short = tmp_path / "short.csv"
    short.write_text(",".join(COLUMNS) + "\na,b\n", encoding="utf-8")
    with pytest.raises(LlmsimError, match=rf"short.csv:2: 2 fields for {len(COLUMNS)} columns"):
        load_reference_points(short)


def test_shipped_csv_is_the_default():
    assert DEFAULT_CSV.name == "reference_points.csv" and DEFAULT_CSV.is_file()


def _row(**change: str) -> dict[str, str]:
    row = {"id": "p", "source_url": "https://example.org/x", "source_detail": "table 1", "date": "2024-01",
           "engine": "test", "engine_kind": "graph", "model": "llama-2-7b", "gpu": "a100-80g-sxm", "tp": "1",
           "phase": "prefill", "batch": "1", "prompt_tokens": "128", "context_tokens": "", "output_tokens": "",
           "measured": "10", "measured_unit": "ms", "unit_note": "", "overheads": "cuda-graph"}
    row.update(change)
    return row


def _write(tmp_path, *rows: dict[str, str]):
    path = tmp_path / "points.csv"
    lines = ["# a comment line, skipped", ",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_each_row_is_priced_with_its_engines_overhead_preset():
    presets = {p.id: p.overheads for p in load_reference_points()}
    assert presets["gptfast-l2-7b-tp1"] == "kernels-only"  # a bare generation loop, no scheduler
    assert presets["sglang-h100-l3-8b-flashinfer-eager"] == "eager"
    assert presets["sglang-h100-l3-8b-flashinfer-graph"] == "cuda-graph"
    assert set(presets.values()) == {"kernels-only", "eager", "cuda-graph"}
