"""Workloads: arrival processes keep their intended rate and variability, trace replay and
rescaling keep the trace's shape, closed-loop clients never exceed N requests in flight, the SLA
guard drops and aborts, and every shipped scenario validates and runs briefly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmsim import load_scenario, scenario_from_dict, simulate
from llmsim.cli import main
from llmsim.config import WorkloadConfig
from llmsim.rng import stream
from llmsim.workload import build_workload
from llmsim.workload.arrivals import gamma_arrivals, gap_cv, mean_rate_per_s, poisson_arrivals, rescale_to_rate, spread_ties
from llmsim.workload.readers import read_trace

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
AZURE_CONV = REPO / "traces/azure2023/AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = REPO / "traces/azure2023/AzureLLMInferenceTrace_code.csv"
SHAREGPT = REPO / "traces/sharegpt/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


# ------------------------------------------------------------------------------ arrival processes
# With n gaps the relative standard error of the mean gap is cv / sqrt(n); with 200,000 gaps and
# cv <= 3 that is <= 0.7%, so 3% bounds are > 4 standard errors. The sample CV of Gamma gaps has a
# standard error of roughly cv * sqrt((1 + 1.5 cv^2) / n) / ... < 1.5% here; 5% bounds suffice.
N = 200_000


def test_poisson_arrivals_have_the_asked_rate_and_unit_cv():
    t = poisson_arrivals(stream(1, "t"), 7.0, n=N)
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert mean_rate_per_s(t) == pytest.approx(7.0, rel=0.03)
    assert gap_cv(t) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 2.0, 3.0])
def test_gamma_arrivals_have_the_asked_rate_and_cv(cv):
    t = gamma_arrivals(stream(2, "t"), 4.0, cv, n=N)
    assert mean_rate_per_s(t) == pytest.approx(4.0, rel=0.03)
    assert gap_cv(t) == pytest.approx(cv, rel=0.05)


def test_arrivals_bounded_by_duration_stay_inside_it_and_keep_the_rate():
    t = poisson_arrivals(stream(3, "t"), 50.0, duration_s=2000.0)
    assert t.max() < 2000.0 and len(t) == pytest.approx(100_000, rel=0.02)


@pytest.mark.parametrize("path", [AZURE_CONV, AZURE_CODE], ids=["azure-conv", "azure-code"])
def test_rescaling_a_trace_gives_the_target_rate_and_keeps_the_gap_cv(path):
    t = read_trace(path).arrival_s
    for rate in (1.0, 12.5):
        r = rescale_to_rate(t, rate)
        assert r[0] == 0.0
        assert mean_rate_per_s(r) == pytest.approx(rate, rel=1e-9)
        assert gap_cv(r) == pytest.approx(gap_cv(t), rel=1e-9)


def test_spreading_tied_timestamps_keeps_order_and_slots():
    t = np.array([0.0, 0.0, 0.0, 3.0, 3.0, 9.0])
    s = spread_ties(stream(4, "t"), t, 3.0)
    assert np.all(np.diff(s) >= 0) and len(np.unique(s)) == 6
    assert np.all((s[:3] >= 0) & (s[:3] < 3)) and np.all((s[3:5] >= 3) & (s[3:5] < 6)) and s[5] == 9.0


# ------------------------------------------------------------------------------ workload building
def _workload(**kw) -> WorkloadConfig:
    base = {"arrivals": {"kind": "poisson", "rate_per_s": 1.0}, "max_new_tokens": "exact"}
    return WorkloadConfig.model_validate({**base, **kw})


def test_vllm_sharegpt_filter_keeps_only_requests_inside_the_bounds():
    cfg = _workload(
        lengths={"kind": "table", "path": str(SHAREGPT)}, num_requests=5000,
        filter={"min_input_tokens": 4, "max_input_tokens": 1024, "min_output_tokens": 4, "max_total_tokens": 2048},
    )
    wl = build_workload(cfg, 0)
    assert wl.prompt_tokens.min() >= 4 and wl.prompt_tokens.max() <= 1024 and wl.output_tokens.min() >= 4
    assert (wl.prompt_tokens + wl.output_tokens).max() <= 2048
    assert any("filter kept" in n for n in wl.notes)


def test_sampling_without_replacement_draws_distinct_rows_and_refuses_too_many():
    rows = read_trace(AZURE_CODE)
    cfg = _workload(lengths={"kind": "table", "path": str(AZURE_CODE), "replacement": False}, num_requests=len(rows))
    wl = build_workload(cfg, 0)
    assert sorted(zip(wl.prompt_tokens, wl.output_tokens)) == sorted(zip(rows.prompt_tokens, rows.output_tokens))
    with pytest.raises(Exception, match="without replacement"):
        build_workload(_workload(lengths={"kind": "table", "path": str(AZURE_CODE), "replacement": False}, num_requests=len(rows) + 1), 0)


def test_lognormal_lengths_have_the_asked_median_and_bounds():
    spec = {"median": 500, "sigma": 0.8, "min": 10, "max": 4000}
    wl = build_workload(_workload(lengths={"kind": "lognormal", "input_tokens": spec, "output_tokens": spec}, num_requests=50_000), 0)
    assert np.median(wl.prompt_tokens) == pytest.approx(500, rel=0.03)
    assert wl.prompt_tokens.min() >= 10 and wl.output_tokens.max() <= 4000


def test_trace_replay_keeps_file_order_and_recorded_times():
    cfg = _workload(trace={"path": str(AZURE_CONV)}, arrivals={"kind": "trace"}, num_requests=1000)
    wl = build_workload(cfg, 0)
    tr = read_trace(AZURE_CONV)
    assert (wl.prompt_tokens == tr.prompt_tokens[:1000]).all() and (wl.arrival_s == tr.arrival_s[:1000]).all()


def test_mooncake_block_hash_ids_are_kept_on_the_requests_of_a_run():
    sc = load_scenario(REPO / "scenarios/mooncake-conv.yaml", ["workload.num_requests=30"])
    r = simulate(sc)
    tr = read_trace(REPO / "traces/mooncake/conversation_trace.jsonl")
    ids = r.table.block_hash_ids
    assert len(ids) == 30 and all((a == b).all() for a, b in zip(ids, tr.hash_ids[:30]))
    assert all(len(h) == -(-p // 512) for h, p in zip(ids, r.requests["prompt_tokens"]))


def test_trace_arrivals_need_a_trace_with_timestamps():
    with pytest.raises(Exception, match="length table"):
        build_workload(_workload(trace={"path": str(SHAREGPT)}, arrivals={"kind": "trace"}), 0)


def test_constant_cap_truncates_outputs_and_says_how_many():
    wl = build_workload(_workload(lengths={"kind": "uniform", "input_tokens": [10, 20], "output_tokens": [1, 100]}, num_requests=1000, max_new_tokens=50), 0)
    assert wl.output_tokens.max() == 50 and (wl.max_new_tokens == 50).all()
    assert any("stop at the cap" in n for n in wl.notes)


# ------------------------------------------------------------------------------ closed loop, guard
def _closed_scenario(**arrivals) -> dict:
    return {
        "name": "closed", "seed": 3, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_model_len": 4096, "kv_capacity_tokens": 6000, "max_num_seqs": 64},
        "scheduler": {"kind": "aggressive"},
        "workload": {
            "lengths": {"kind": "uniform", "input_tokens": [50, 400], "output_tokens": [20, 300]},
            "arrivals": {"kind": "closed-loop", **arrivals}, "num_requests": 300, "max_new_tokens": "exact",
        },
        "sla": {"ttft_s": 2.0, "max_tbt_s": 0.2},
    }


def _max_concurrent(df) -> int:
    events = sorted([(a, 1) for a in df["arrival_s"]] + [(e, -1) for e in df["end_s"]], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("clients", [1, 5, 17])
def test_closed_loop_never_has_more_than_n_requests_in_flight(clients):
    r = simulate(scenario_from_dict(_closed_scenario(clients=clients)))
    df = r.requests
    assert len(df) == 300 and df["finished"].all()
    assert r.summary["max_in_flight"] == clients
    assert _max_concurrent(df) <= clients
    # each client sends its next request exactly when its previous one ends (no think time)
    for _, g in df.groupby("client"):
        assert (g["arrival_s"].to_numpy()[1:] == g["end_s"].to_numpy()[:-1]).all()


def test_closed_loop_resends_a_request_that_missed_the_sla_until_it_succeeds_or_runs_out_of_attempts():
    r = simulate(scenario_from_dict(_closed_scenario(clients=24, resend_failed=True, max_attempts=3)))
    df = r.requests
    assert df["origin_id"].nunique() == 300
    for _, g in df.groupby("origin_id"):
        assert list(g["attempt"]) == list(range(len(g))) and len(g) <= 3
        assert not g["good"].iloc[:-1].any()  # only the last attempt may be good
        assert g["good"].iloc[-1] or len(g) == 3
    assert (df["attempt"] > 0).any()


def test_sla_guard_drops_requests_queued_too_long_and_aborts_stalled_ones():
    sc = _closed_scenario(clients=40)
    sc["engine"]["sla_guard"] = {"max_queue_s": 0.5, "max_tbt_s": 0.15}
    r = simulate(scenario_from_dict(sc))
    df = r.requests
    dropped, aborted = df[df["outcome"] == "dropped"], df[df["outcome"] == "aborted"]
    assert len(dropped) > 0 and len(aborted) > 0
    assert dropped["queue_delay_s"].isna().all()  # never admitted
    assert not df.loc[df["outcome"] != "finished", "good"].any()
    for e in r.engines:
        assert e.kv.used_blocks == 0 and not e.running and not e.waiting
    # the finished requests all had every gap within the abort limit
    fin = df[df["finished"] & (df["generated_tokens"] > 1)]
    assert (fin["max_tbt_s"] <= 0.15 + 1e-9).all()


# ------------------------------------------------------------------------------ shipped scenarios
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_validates(path):
    assert load_scenario(path).scenario.name == path.stem


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_runs_briefly(path, tmp_path):
    status = main(["run", str(path), "--set", "workload.num_requests=40", "--quiet", "--out", str(tmp_path)])
    assert status == 0
    import json

    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["num_requests"] >= 40 and s["num_finished"] + s["dropped"] + s["aborted"] == s["num_requests"]


def test_trace_stats_and_convert_commands(tmp_path, capsys):
    assert main(["trace", "stats", str(AZURE_CONV)]) == 0
    out = capsys.readouterr().out
    assert "19,366" in out and "5.530 req/s" in out
    assert main(["trace", "convert", str(AZURE_CODE), str(tmp_path / "code.csv")]) == 0
    a, b = read_trace(AZURE_CODE), read_trace(tmp_path / "code.csv")
    assert b.format == "llmsim" and (a.arrival_s == b.arrival_s).all() and (a.prompt_tokens == b.prompt_tokens).all()
    assert main(["trace", "convert", str(SHAREGPT), str(tmp_path / "s.csv")]) == 2  # no timestamps
    assert main(["trace", "convert", str(SHAREGPT), str(tmp_path / "s.csv"), "--poisson-rate", "2"]) == 0
    assert mean_rate_per_s(read_trace(tmp_path / "s.csv").arrival_s) == pytest.approx(2.0, rel=0.05)
