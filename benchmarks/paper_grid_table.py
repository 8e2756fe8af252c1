"""Markdown tables from `llmsim reproduce past-future` results (docs/paper-reproduction.md).

Reads one or more `grid.csv` files (one row per run; or the trimmed copies in
docs/paper-fig7-7b/, which add `hardware`: one table per profile) and prints, per
model, dataset and load:
the mean goodput of each scheduler over seeds (prompt + output tokens per simulated second),
past-future over the best of aggressive and conservative and over aggressive (llmsim.reproduce's
ratio_table), and the runs that the bound on simulated time stopped with requests not yet
succeeded (`unfinished` = the stream's requests less those that succeeded; computed here from
`num_good` when the grid was written before that column existed).

    python benchmarks/paper_grid_table.py docs/paper-fig7-7b/*.csv
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grids", nargs="+", help="grid.csv files of llmsim reproduce past-future")
    p.add_argument("--requests", type=int, default=500, help="requests in each run's stream (workload.num_requests)")
    args = p.parse_args(argv)

    grid = pd.concat([pd.read_csv(g) for g in args.grids], ignore_index=True)
    if "unfinished" not in grid:
        grid["unfinished"] = args.requests - grid["num_good"]  # each request succeeds at most once
    if "hardware" not in grid:  # a grid.csv of one reproduce run: one hardware profile
        grid["hardware"] = "(one profile)"
    for hardware, g in grid.groupby("hardware", sort=False):
        print(f"\n{hardware}:\n")
        print_table(g)
    return 0


def print_table(grid: pd.DataFrame) -> None:
    """One Markdown table for the runs of one hardware profile."""
    from llmsim.reproduce import ratio_table

    ratios = ratio_table(grid)
    cut = grid.assign(cut=grid["unfinished"] > 0).groupby(["model", "dataset", "load"], sort=False)
    cut = cut.agg(cut=("cut", "sum"), unfinished=("unfinished", "sum"), runs=("cut", "size")).reset_index()
    table = ratios.merge(cut, on=["model", "dataset", "load"])
    print("| dataset | clients | aggressive | conservative | past-future | oracle (exact lengths) "
          "| PF / best baseline | PF / aggressive | runs cut by the bound (requests left) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for _, r in table.iterrows():
        cut_text = "0" if r["cut"] == 0 else f"{r['cut']} of {r['runs']} ({r['unfinished']:,})"
        print(f"| {r['dataset']} | {r['load']:g} | {r['aggressive']:,.0f} | {r['conservative']:,.0f} | {r['past-future']:,.0f} "
              f"| {r['oracle']:,.0f} | {r['pf_over_best_baseline']:.2f} | {r['pf_over_aggressive']:.2f} | {cut_text} |")


if __name__ == "__main__":
    sys.exit(main())
