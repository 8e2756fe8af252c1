"""`llmsim reproduce past-future` (llmsim/reproduce.py): the grid at a tiny size, the ratio table
by hand, and its results folder rules."""

from __future__ import annotations

import pandas as pd
import pytest

from llmsim.cli import main
from llmsim.reproduce import ratio_table


def test_ratios_are_past_future_over_the_best_baseline_and_over_aggressive_from_means_over_seeds():
    rows = []
    for seed, (agg, cons, pf, orc) in enumerate(((100, 300, 600, 650), (300, 500, 800, 850))):
        for sched, goodput in zip(("aggressive", "conservative", "past-future", "oracle"), (agg, cons, pf, orc)):
            rows.append({"model": "7b", "dataset": "dist1", "load": 40, "scheduler": sched, "seed": seed, "goodput_tps": goodput})
    r = ratio_table(pd.DataFrame(rows)).iloc[0]
    assert (r["aggressive"], r["conservative"], r["past-future"]) == (200, 400, 700)
    assert r["pf_over_best_baseline"] == pytest.approx(700 / 400)
    assert r["pf_over_aggressive"] == pytest.approx(700 / 200)


@pytest.mark.slow
def test_a_tiny_grid_writes_its_tables_figure_and_refuses_to_mix_runs(tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["reproduce", "past-future", "--datasets", "dist1", "--loads", "4", "--seeds", "2",
            "--set", "workload.num_requests=20", "--executor", "local:1", "--out", str(out)]
    assert main(args) == 0
    grid = pd.read_csv(out / "grid.csv")
    assert len(grid) == 4 * 2  # schedulers x seeds
    assert set(grid["scheduler"]) == {"aggressive", "conservative", "past-future", "oracle"}
    assert (grid["hardware_fidelity"] == "analytic").all()
    assert (grid["unfinished"] == 0).all()  # 20 requests end long before the default bound
    ratios = pd.read_csv(out / "ratios.csv")
    assert list(ratios["load"]) == [4] and ratios["pf_over_best_baseline"].iloc[0] > 0
    assert (out / "fig7-7b.png").stat().st_size > 0 and (out / "reproduce.json").is_file()
    capsys.readouterr()
    assert main(args) == 2  # the folder holds a run: refused without --overwrite
    assert "folder is not empty" in capsys.readouterr().err
    assert main([*args[:1], "past-future", "--models", "9b"]) == 2


@pytest.mark.parametrize("model", ["7b", "13b", "70b"])
def test_the_fig7_aggressive_server_keeps_the_queue_drop_and_loses_only_the_token_gap_abort(model):
    # the artifact's agg99 server returns at once from its token-gap check but still drops requests
    # queued too long before each admission round (docs/paper-reproduction.md)
    from llmsim import load_scenario
    from llmsim.reproduce import SCENARIOS

    path = SCENARIOS / f"fig7-{model}-dist1.yaml"
    aggressive = load_scenario(path, scheduler="aggressive").scenario.engine.sla_guard
    past_future = load_scenario(path, scheduler="past-future").scenario.engine.sla_guard
    assert aggressive.max_queue_s == past_future.max_queue_s > 0
    assert aggressive.check_queue_at == "admission-rounds"
    assert aggressive.max_tbt_s is None and past_future.max_tbt_s > 0


@pytest.mark.slow
def test_a_bound_on_simulated_time_stops_the_sends_and_counts_the_requests_left():
    from llmsim.reproduce import run_grid

    # 8 requests of 2,048 to 4,096 output tokens, 4 clients, sends stopped at 10 s: a request takes
    # over 20 s (2,048 decode steps of 10 ms or more), so only the 4 sent at 0 can succeed (they
    # finish after the bound: attempts in flight are not cut)
    grid = run_grid(["7b"], ["dist1"], [4], 1, "a100-80g-sxm", "local:1",
                    ["workload.num_requests=8", "workload.duration_s=10"])
    assert len(grid) == 4
    assert (grid["unfinished"] >= 4).all()
    assert (grid["unfinished"] + grid["num_good"] == 8).all()
    assert (grid["num_requests"] == 4).all()  # attempts: nothing re-sent or sent after the bound


def test_ratios_are_missing_where_a_part_of_the_grid_was_not_run():
    rows = [{"model": "7b", "dataset": "dist1", "load": 40, "scheduler": s, "seed": 0, "goodput_tps": g}
            for s, g in (("aggressive", 100), ("past-future", 300))]
    r = ratio_table(pd.DataFrame(rows)).iloc[0]
    assert r["pf_over_aggressive"] == pytest.approx(3.0)
    assert pd.isna(r["conservative"]) and pd.isna(r["pf_over_best_baseline"])  # no best baseline without conservative


FIXED = ("workload.num_requests=3", "workload.lengths={kind: fixed, input_tokens: 4000, output_tokens: 100}",
         "scheduler.conservative.reserve_output_tokens=56000")


def test_offline_counts_decode_steps_to_the_last_admission_as_the_artifact_stops_there():
    from llmsim.paper_offline import offline_cell

    # conservative reserves 4000 + 56000 - 1 tokens each: two of the three fit in 120,000. Both emit
    # their first token at their prefill and finish after 99 decode steps; the third is admitted
    # then (the batch is empty, so at once) and decodes 99 more. The artifact's simulator stops at
    # that admission, when its generator has no request left.
    row = offline_cell(("dist1", "conservative", 0, FIXED))
    assert (row["steps"], row["decode_steps"], row["decode_steps_to_last_admission"]) == (200, 198, 99)
    # decode step k (1..99) holds 2 x (4000 + k) tokens: mean 8,100 of 120,000
    assert row["kv_use_to_last_admission"] == pytest.approx(8100 / 120_000)
    assert row["evictions_per_request"] == 0 and row["artifact_steps"] == 482_860


def test_reproduce_offline_writes_its_tables(tmp_path, capsys):
    out = tmp_path / "off"
    args = ["reproduce", "past-future", "--offline", "--datasets", "dist1", "--schedulers", "conservative", "--seeds", "2",
            "--executor", "local:1", "--out", str(out), *(x for s in FIXED for x in ("--set", s))]
    assert main(args) == 0
    cells = pd.read_csv(out / "offline.csv")
    assert list(cells["seed"]) == [0, 1] and (cells["decode_steps_to_last_admission"] == 99).all()
    summary = pd.read_csv(out / "offline_summary.csv").iloc[0]
    assert summary["seeds"] == 2 and summary["diff_to_last_admission"] == pytest.approx(99 / 482_860 - 1)
    assert "diff_to_last_admission" in capsys.readouterr().out
    assert main([*args[:2], "--schedulers", "fcfs", "--offline"]) == 2  # names the bad choice


@pytest.mark.parametrize("model", ["7b", "13b", "70b"])
def test_the_fig7_servers_share_the_artifacts_round_cadence_pause_order_and_admission_limits(model):
    # all three servers: max_wait_tokens = 2 (router/manager.py) and the Fcfs pause strategy (the
    # highest request id first); one admission per round in the conservative and past-future
    # servers' req_queue.py, none in the aggressive server's
    from llmsim import load_scenario
    from llmsim.reproduce import SCENARIOS

    path = SCENARIOS / f"fig7-{model}-dist2.yaml"
    limits = {}
    for kind in ("aggressive", "conservative", "past-future"):
        sc = load_scenario(path, scheduler=kind).scenario
        knobs = getattr(sc.scheduler, kind.replace("-", "_"))
        assert knobs.decode_steps_between_rounds == 2 and sc.engine.victim == "latest-arrival"
        limits[kind] = knobs.max_admissions_per_round
    assert limits == {"aggressive": None, "conservative": 1, "past-future": 1}
    # no oracle server in the artifact: llmsim's oracle takes past-future's cadence, so that only
    # the lengths differ
    oracle = load_scenario(path, scheduler="oracle").scenario.scheduler.oracle
    assert (oracle.max_admissions_per_round, oracle.decode_steps_between_rounds) == (1, 2)
