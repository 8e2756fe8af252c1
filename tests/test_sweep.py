"""Sweeps, executors, capacity search, scheduler comparison, figures and their CLI (llmsim.sweep,
llmsim.executors, llmsim.capacity, llmsim.plots, llmsim.sweep_cli). Small request counts: the
whole file runs in well under a minute on two cores.

The capacity search is checked against a closed form: one replica running one request at a time
with a constant step time D and one-token outputs is an M/D/1 queue whose TTFT is the waiting
time plus D, so with the SLA `ttft_s: D + t` the SLA attainment is P(Wq <= t), known exactly
(Erlang's formula, `llmsim.capacity.md1_wait_cdf`); the knee is the rate where it equals the target.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import re

import pytest
import yaml
from rich.console import Console

from llmsim import load_scenario, simulate
from llmsim.capacity import find_capacity, judge, md1_knee_rate, md1_wait_cdf
from llmsim.errors import LlmsimError
from llmsim.executors import DaskExecutor, LocalExecutor, make_executor
from llmsim.plots import plot_run, plot_sweep
from llmsim.report import write_results
from llmsim.sweep import CLIENTS_KNOB, RATE_KNOB, compare_plan, compare_schedulers, mean_ci95, parse_loads, parse_vary, run_sweep, t_quantile_975, write_sweep
from llmsim.sweep_cli import add_parsers

REPO = Path(__file__).resolve().parents[1]
SHAREGPT = REPO / "scenarios" / "sharegpt.yaml"
BALANCED = REPO / "scenarios" / "paper-balanced.yaml"
SMALL = ["workload.num_requests=40"]
STEP_S = 0.01  # M/D/1 service time D
WAIT_LIMIT_S = 0.03  # t: SLA ttft_s = D + t


def md1_scenario(tmp_path: Path, rate_per_s: float, num_requests: int, ttft_s: float, seed: int = 0) -> Path:
    data = {
        "name": "md1", "seed": seed, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_num_seqs": 1, "kv_capacity_tokens": 4096},
        "cost_model": {"kind": "constant", "step_time_s": STEP_S},
        "scheduler": {"kind": "aggressive"},
        "workload": {"lengths": {"kind": "fixed", "input_tokens": 16, "output_tokens": 1},
                     "arrivals": {"kind": "poisson", "rate_per_s": rate_per_s},
                     "num_requests": num_requests, "max_new_tokens": 1},
        "sla": {"ttft_s": ttft_s},
    }
    path = tmp_path / f"md1-{rate_per_s:g}-{num_requests}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- loads, stats
def test_parse_loads_lists_and_inclusive_grids():
    assert parse_loads("1,2,4") == [1.0, 2.0, 4.0]
    assert parse_loads("0.5") == [0.5]
    assert parse_loads("1:5:1") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert parse_loads("0.1:0.5:0.1") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert parse_loads("2:7:2") == [2.0, 4.0, 6.0]
    for bad in ("", "a,b", "1:2", "5:1:1", "1:5:0", "0,1", "-1"):
        with pytest.raises(LlmsimError):
            parse_loads(bad)


def test_t_quantiles_and_interval():
    assert t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=1e-3)
    m, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - 4.303 / math.sqrt(3), 2.0 + 4.303 / math.sqrt(3)), abs=1e-3)
    assert mean_ci95([5.0]) == (5.0, 5.0, 5.0)


# ----------------------------------------------------------------------------- sweeps
def test_sweep_has_one_row_per_point_and_no_missing_metric():
    df = run_sweep(SHAREGPT, ["aggressive", "conservative"], [2.0, 5.0], seeds=2, executor="local:1", overrides=SMALL)
    assert len(df) == 2 * 2 * 2
    assert list(df.columns[:5]) == ["scenario", "scheduler", "load_knob", "load", "seed"]
    assert set(df["load_knob"]) == {RATE_KNOB}
    assert sorted(set(zip(df["scheduler"], df["load"], df["seed"]))) == sorted(
        (s, x, i) for s in ("aggressive", "conservative") for x in (2.0, 5.0) for i in (0, 1))
    assert not df.isna().any().any(), df.columns[df.isna().any()].tolist()
    for col in ("goodput_rps", "goodput_tps", "sla_attainment", "eviction_rate", "ttft_s_p99", "max_tbt_s_p99", "tpot_s_p50",
                "e2e_s_mean", "queue_delay_s_max", "kv_util_peak", "sla_ttft_s", "sla_max_tbt_s", "arrival_mode"):
        assert col in df.columns
    assert (df["num_requests"] == 40).all()
    # Common random numbers: a higher rate compresses the same arrivals, so runs take less time.
    by = df.set_index(["scheduler", "seed", "load"])["duration_s"]
    assert (by.xs(5.0, level="load") < by.xs(2.0, level="load")).all()


def test_closed_loop_sweep_varies_clients():
    df = run_sweep(BALANCED, ["aggressive"], [2, 6], executor="local:1", overrides=["workload.num_requests=12"])
    assert set(df["load_knob"]) == {CLIENTS_KNOB}
    assert df["clients"].tolist() == [2, 6] and df["max_in_flight"].tolist() == [2, 6]
    with pytest.raises(LlmsimError, match="whole number of clients"):
        run_sweep(BALANCED, ["aggressive"], [2.5], executor="local:1")
    with pytest.raises(LlmsimError, match="no load knob"):
        run_sweep(SHAREGPT, ["aggressive"], [1.0], executor="local:1", overrides=["workload.arrivals={kind: all-at-once}"])
    with pytest.raises(LlmsimError, match="unknown scheduler"):
        run_sweep(SHAREGPT, ["fifo"], [1.0], executor="local:1")


@pytest.mark.slow
def test_sweep_is_identical_under_local_processes_and_a_dask_local_cluster():
    pytest.importorskip("dask.distributed")
    args = (SHAREGPT, ["aggressive", "past-future"], [3.0, 6.0], 2)
    done = []
    with LocalExecutor(2) as local:
        a = run_sweep(*args, executor=local, overrides=SMALL, progress=lambda i, n, row: done.append((i, n)))
    b = run_sweep(*args, executor="dask://local:2", overrides=SMALL)
    c = run_sweep(*args, executor="local:1", overrides=SMALL)
    assert done[-1] == (8, 8) and len(done) == 8
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(a, c, check_exact=True)


def test_executor_specs_and_missing_dask_hint(monkeypatch):
    assert make_executor("local:3").max_workers == 3
    assert isinstance(make_executor("local"), LocalExecutor)
    assert make_executor(ex := LocalExecutor(1)) is ex
    with LocalExecutor(2) as pool:
        assert pool.map(abs, [-3, 1, -2]) == [3, 1, 2]  # input order
    for bad in ("threads", "local:0", "dask://", "dask://local:x"):
        with pytest.raises(LlmsimError):
            make_executor(bad)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if dask were not installed
    with pytest.raises(LlmsimError, match=r"pip install 'llmsim\[dask\]'"):
        DaskExecutor("dask://local")


# ----------------------------------------------------------------------------- capacity
def test_md1_waiting_time_closed_form():
    rate = 50.0
    assert md1_wait_cdf(0.0, rate, STEP_S) == pytest.approx(1 - rate * STEP_S)
    assert md1_wait_cdf(1.0, rate, STEP_S) == pytest.approx(1.0, abs=1e-9)
    values = [md1_wait_cdf(t, rate, STEP_S) for t in np.linspace(0, 0.1, 21)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_capacity_search_finds_the_md1_knee_within_its_interval(tmp_path):
    target = 0.9
    knee = md1_knee_rate(WAIT_LIMIT_S, STEP_S, target)  # 69.40 req/s, rho = 0.694
    path = md1_scenario(tmp_path, 40.0, 2000, STEP_S + WAIT_LIMIT_S, seed=200)
    res = find_capacity(path, "aggressive", target, seeds=5, executor="local:1")
    lo, hi = res.knee_ci95
    assert lo <= knee <= hi, (knee, res.knee_ci95, res.knee_per_seed)
    assert hi - lo < 0.25 * knee  # a meaningful interval, not a vacuous one
    assert abs(res.knee_mean - knee) < 0.06 * knee
    assert res.load_knob == RATE_KNOB and len(res.knee_per_seed) == 5 and not res.notes
    probes = res.probes
    assert set(probes["verdict"]) <= {"stable", "overloaded"}
    assert ((probes["attainment"] >= target) == (probes["verdict"] == "stable")).all()
    for seed, (low, high) in zip(res.seeds, res.bracket_per_seed):  # brackets converged to 2 %
        assert high - low <= 0.02 * high
        mine = probes[probes["seed"] == seed]
        assert mine[mine["load"] == low]["verdict"].item() == "stable"
        assert mine[mine["load"] == high]["verdict"].item() == "overloaded"


def test_capacity_verdicts_stable_backlogged_overloaded(tmp_path):
    def verdict(rate, ttft_s):
        path = md1_scenario(tmp_path, rate, 600, ttft_s)
        r = simulate(load_scenario(path))
        return judge(r.requests, r.summary["sla"], 0.9, warmup_fraction=0.1)

    stable = verdict(30.0, 0.04)  # rho 0.3
    assert stable["verdict"] == "stable" and stable["attainment"] > 0.95
    # rho 1.5 with a lenient SLA: every request still meets it in this short run, but the queue grows.
    backlog = verdict(150.0, 30.0)
    assert backlog["attainment"] == 1.0 and backlog["verdict"] == "backlogged"
    assert backlog["queue_delay_last_third_s"] > 3 * backlog["queue_delay_first_third_s"]
    assert verdict(150.0, 0.04)["verdict"] == "overloaded"


def test_capacity_closed_loop_searches_whole_clients():
    res = find_capacity(BALANCED, "aggressive", 0.9, seeds=1, executor="local:1",
                        overrides=["workload.num_requests=30", "sla.ttft_s=20"], start_load=8)
    assert res.load_knob == CLIENTS_KNOB and res.load_unit == "clients"
    assert all(float(x).is_integer() for x in res.probes["load"])
    low, high = res.bracket_per_seed[0]
    assert high - low == 1 and res.knee_per_seed[0] == low
    assert math.isnan(res.knee_ci95[0])  # one seed: no interval


# ----------------------------------------------------------------------------- compare
def test_compare_schedulers_side_by_side():
    df = compare_schedulers(SHAREGPT, overrides=["workload.num_requests=60", "workload.arrivals.rate_per_s=8"], executor="local:1")
    assert df["scheduler"].tolist() == ["aggressive", "conservative", "past-future", "oracle"]
    assert (df["num_requests"] == 60).all() and (df["load"] == 8.0).all() and (df["seed"] == 0).all()
    assert df.set_index("scheduler")["oracle_exact_lengths"].to_dict() == {
        "aggressive": False, "conservative": False, "past-future": False, "oracle": True}
    assert df.set_index("scheduler").loc["conservative", "evictions"] == 0


def test_compare_varies_scenario_keys_over_every_combination():
    df = compare_schedulers(SHAREGPT, ["aggressive"], ["workload.num_requests=40", "workload.arrivals.rate_per_s=8"],
                            executor="local:1", vary=parse_vary(["cluster.replicas=1,2", "engine.max_num_seqs=4,256"]))
    assert df["variant"].tolist() == ["replicas=1, max_num_seqs=4", "replicas=1, max_num_seqs=256",
                                      "replicas=2, max_num_seqs=4", "replicas=2, max_num_seqs=256"]
    # each variant really ran with its values: one replica with 4 sequences queues most
    by = df.set_index("variant")["queue_delay_s_mean"]
    assert by["replicas=1, max_num_seqs=4"] > by["replicas=1, max_num_seqs=256"]
    assert by["replicas=1, max_num_seqs=4"] > by["replicas=2, max_num_seqs=4"]


def test_compare_runs_the_scenarios_own_compare_section(tmp_path):
    text = SHAREGPT.read_text() + "\ncompare:\n  schedulers: [past-future]\n  vary:\n    cluster.replicas: [1, 2]\n"
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("path: ../", f"path: {SHAREGPT.parent.parent}/"))
    assert compare_plan(path) == (["past-future"], [("cluster.replicas", ["1", "2"])])
    # flags replace the section
    assert compare_plan(path, ["aggressive"], vary=[("cluster.router", ["random"])]) == (["aggressive"], [("cluster.router", ["random"])])
    df = compare_schedulers(path, overrides=["workload.num_requests=30"], executor="local:1")
    assert df["scheduler"].tolist() == ["past-future"] * 2 and df["variant"].tolist() == ["replicas=1", "replicas=2"]


@pytest.mark.parametrize("section, message", [
    ("compare:\n  schedulers: [fifo]\n", "unknown scheduler 'fifo'"),
    ("compare:\n  vary:\n    cluster.replicas: []\n", "compare.vary.cluster.replicas"),
    ("compare:\n  vary: {cluster.nope: [1]}\n", "cluster.nope"),
    ("compare:\n  varry: {}\n", "varry"),
])
def test_a_bad_compare_section_is_named(tmp_path, section, message):
    path = tmp_path / "s.yaml"
    path.write_text(SHAREGPT.read_text().replace("path: ../", f"path: {SHAREGPT.parent.parent}/") + "\n" + section)
    with pytest.raises(LlmsimError, match=re.escape(message)):
        compare_schedulers(path, overrides=["workload.num_requests=5"], executor="local:1")


@pytest.mark.parametrize("text", ["cluster.router", "=a,b", "cluster.router=", "cluster.router=,"])
def test_vary_rejects_malformed_text(text):
    with pytest.raises(LlmsimError, match="--vary"):
        parse_vary([text])


def test_vary_rejects_a_key_given_twice():
    with pytest.raises(LlmsimError, match="given twice"):
        parse_vary(["cluster.replicas=1", "cluster.replicas=2"])


# ----------------------------------------------------------------------------- figures, CLI
def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_write_sweep_and_plots_write_files(tmp_path):
    df = run_sweep(SHAREGPT, ["aggressive", "past-future"], [2.0, 4.0], seeds=2, executor="local:1", overrides=SMALL)
    paths = write_sweep(df, tmp_path / "sweep")
    names = {p.name for p in paths}
    assert {"sweep.parquet", "sweep.csv", "goodput.png", "sla_attainment.png", "tail_latency.png", "eviction_rate.png"} <= names
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sweep" / "sweep.parquet"), df)
    assert all(_is_png(p) for p in paths if p.suffix == ".png")

    result = simulate(load_scenario(BALANCED, ["workload.num_requests=20", "engine.record_steps=true"], "aggressive"))
    run_dir = write_results(result, tmp_path / "run")
    written = plot_run(run_dir)
    assert [p.name for p in written] == ["timeseries.png", "latency_cdf.png"] and all(_is_png(p) for p in written)
    (run_dir / "steps.csv").unlink()
    assert [p.name for p in plot_run(run_dir)] == ["latency_cdf.png"]
    with pytest.raises(LlmsimError, match="not a results folder"):
        plot_run(tmp_path)
    assert plot_sweep(df, tmp_path / "again")


def _cli(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="llmsim")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    console = Console(record=True, width=160, force_terminal=False)
    code = args.handler(args, console)
    return code, console.export_text()


def test_cli_sweep_compare_capacity_plot(tmp_path):
    out = tmp_path / "sw"
    code, text = _cli(["sweep", str(SHAREGPT), "--schedulers", "aggressive,oracle", "--loads", "2:4:2", "--executor", "local:1",
                       "--set", "workload.num_requests=30", "--out", str(out)])
    assert code == 0 and "goodput" in text and "req/s" in text and (out / "sweep.parquet").exists() and (out / "goodput.png").exists()
    code, text = _cli(["plot", str(out)])
    assert code == 0 and "tail_latency.png" in text
    code, text = _cli(["compare", str(SHAREGPT), "--schedulers", "aggressive,conservative", "--executor", "local:1",
                       "--set", "workload.num_requests=30"])
    assert code == 0 and "SLA attainment" in text and "conservative" in text
    path = md1_scenario(tmp_path, 40.0, 300, STEP_S + WAIT_LIMIT_S)
    code, text = _cli(["capacity", str(path), "--scheduler", "aggressive", "--seeds", "2", "--executor", "local:1",
                       "--rel-tol", "0.1", "--out", str(tmp_path / "cap")])
    assert code == 0 and "capacity at 90% SLA attainment" in text and "95 % interval" in text
    assert (tmp_path / "cap" / "capacity.json").exists() and (tmp_path / "cap" / "probes.csv").exists()
    with pytest.raises(LlmsimError):
        _cli(["sweep", str(SHAREGPT), "--loads", "x"])
