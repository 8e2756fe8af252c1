"""`engine.prefix_caching: false` (the default) reproduces the results of the code before prefix
caching existed: per-request results of 40 Mooncake requests (with hash ids, evictions under
aggressive) for each scheduler and engine mode, written by that code (tests/prefix_reference.py
says how) and read back here; the new `cached_prompt_tokens` column is 0 throughout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llmsim import scenario_from_dict, simulate

from prefix_reference import cases, scenario

DATA = Path(__file__).parent / "data" / "prefix_off"


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", cases())
def test_prefix_caching_off_reproduces_the_results_before_it(kind, mode, tmp_path):
    res = simulate(scenario_from_dict(scenario(kind, mode)))
    assert (res.requests.cached_prompt_tokens == 0).all()
    assert "prefix_cache" not in res.summary
    out = tmp_path / "requests.csv"
    res.requests.drop(columns=["cached_prompt_tokens"]).to_csv(out, index=False, float_format="%.17g")
    expected = pd.read_csv(DATA / f"{kind}-{mode}.csv")
    got = pd.read_csv(out)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
