"""The per-request results table (llmsim.metrics.request_frame): its columns are the request
table's own arrays, not copies (that copy was the simulation's peak memory, docs/performance.md),
and its values are those of the table."""

from __future__ import annotations

import numpy as np

from llmsim import scenario_from_dict, simulate


def test_results_share_the_request_tables_columns_and_equal_them():
    r = simulate(scenario_from_dict({
        "name": "frame", "seed": 1, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_model_len": 4096},
        "scheduler": {"kind": "past-future"},
        "workload": {"lengths": {"kind": "uniform", "input_tokens": [50, 400], "output_tokens": [10, 200]},
                     "arrivals": {"kind": "poisson", "rate_per_s": 20.0}, "num_requests": 200, "max_new_tokens": "exact"},
    }))
    df, t = r.requests, r.table
    for frame_column, table_column in [("prompt_tokens", "prompt_tokens"), ("generated_tokens", "generated_tokens"),
                                       ("evictions", "evictions"), ("prefill_tokens", "prefill_computed_tokens"),
                                       ("end_s", "end_s")]:
        values = df[frame_column].to_numpy()
        assert np.shares_memory(values, getattr(t, table_column)), frame_column  # not copied
        assert np.array_equal(values, t.column(table_column), equal_nan=True), frame_column
    assert df["finished"].all() and (df["generated_tokens"] == df["output_tokens"]).all()
