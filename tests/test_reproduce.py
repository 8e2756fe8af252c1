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
