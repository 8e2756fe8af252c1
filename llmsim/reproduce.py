"""`llmsim reproduce past-future`: the Past-Future paper's Figure 7 grid, and its offline table.

The grid is models x datasets x schedulers x closed-loop clients x seeds, each point one run of
`scenarios/paper/fig7-<model>-<dataset>.yaml` (the artifact's settings, docs/paper-reproduction.md)
through the sweep machinery (llmsim.sweep: local cores or Dask). It writes `grid.csv` (one row per
run), `ratios.csv` (per model, dataset and load: past-future's goodput over the best of
aggressive and conservative, and over aggressive, from the means over seeds) and one figure per
model (`fig7-<model>.png`: goodput in tokens/s against clients, a panel per dataset, 95 % bands
over seeds). `--offline` runs the artifact's offline behaviour table instead (llmsim.paper_offline:
`offline.csv`, one row per run, and `offline_summary.csv`, means over seeds beside the artifact's
step counts). `--schedulers` runs part of either.

The artifact's clients re-sent a failed request until it succeeded, with no time limit or attempt
cap; llmsim bounds every run by the same simulated time instead (`--max-simulated-s`, applied as
`workload.duration_s`: no send after it, attempts in flight then finish), so one point that never
ends cannot hold up the grid. `grid.csv` says per run how many requests had not succeeded by then
(`unfinished`); a run that succeeded every request before the bound is not changed by it.

Units: goodput in prompt + output tokens per simulated second; loads in clients.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import LlmsimError
from .outputs import FolderKind, check_folder, manifest, new_run_id, prepare_folder, write_error

_HERE = Path(__file__).resolve().parent
# the checkout's scenarios/paper, or the copy a wheel carries (pyproject.toml, force-include)
SCENARIOS = next((d for d in (_HERE.parent / "scenarios" / "paper", _HERE / "_data" / "scenarios" / "paper") if d.is_dir()),
                 _HERE.parent / "scenarios" / "paper")
MODELS = ("7b", "13b", "70b")
DATASETS = ("dist1", "dist2", "dist3")
CLIENT_LADDER = "10,20,30,40,60,80,100"  # the paper's 7B ladder
SCHEDULERS = ("aggressive", "conservative", "past-future", "oracle")
BASELINES = ("aggressive", "conservative")
# Simulated seconds after which no request is sent (docs/paper-reproduction.md, "Runs that never
# end"): 1.5x the longest makespan in the measured 7B grid (9,357 s: aggressive, Distribution2,
# 60 clients, A100 profile), so that only a run that cannot end is cut.
MAX_SIMULATED_S = 14_400.0
REPRODUCE = FolderKind("llmsim reproduce", "reproduce.json",
                       ("reproduce.json", "grid.csv", "ratios.csv", "offline.csv", "offline_summary.csv",
                        *(f"fig7-{m}.png" for m in MODELS)))


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="replay the Past-Future paper's Figure 7 grid (scenarios/paper)")
    p.add_argument("paper", choices=["past-future"], help="the paper to reproduce")
    p.add_argument("--models", default="7b", help=f"comma-separated, of {', '.join(MODELS)} (default 7b)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, of dist1, dist2, dist3 (default all)")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS), help="comma-separated (default all four)")
    p.add_argument("--offline", action="store_true",
                   help="the artifact's offline behaviour table instead (all requests at t=0; --models and --loads do not apply)")
    p.add_argument("--loads", default=CLIENT_LADDER, help=f"clients, comma-separated or start:stop:step (default {CLIENT_LADDER})")
    p.add_argument("--seeds", type=int, default=3, help="runs per point, seeds 0..N-1 (default 3)")
    p.add_argument("--hardware", default="a100-80g-sxm", help="hardware profile (the paper's GPU is not known; default A100)")
    p.add_argument("--max-simulated-s", type=float, default=MAX_SIMULATED_S,
                   help=f"no send after this simulated time in any run; 0: none, as the artifact (default {MAX_SIMULATED_S:,.0f})")
    p.add_argument("--executor", default="local", help="local, local:N, dask://HOST:PORT or dask://local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="scenario override for every run, e.g. workload.num_requests=100")
    p.add_argument("--out", type=Path, default=Path("results") / "reproduce-past-future", help="results folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier reproduce's files in --out")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(handler=cmd_reproduce)


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise LlmsimError(f"--{what}: {', '.join(bad) or 'nothing given'}: choose from {', '.join(allowed)}")
    return items


def run_grid(models, datasets, loads, seeds: int, hardware: str, executor="local", overrides=(), progress=None,
             schedulers=SCHEDULERS) -> pd.DataFrame:
    """One row per run: the sweep rows of every (model, dataset), with `model`, `dataset` and
    `unfinished` (requests of the stream that never succeeded: left when a bound stopped the sends).
    `progress(model, dataset, row)` is called after each run."""
    from .config import load_scenario
    from .sweep import run_sweep

    frames = []
    for model in models:
        for dataset in datasets:
            path = SCENARIOS / f"fig7-{model}-{dataset}.yaml"
            if not path.is_file():
                raise LlmsimError(f"{path}: the paper's scenario is missing (install llmsim from its repository)")
            each = None if progress is None else (lambda _done, _total, row, m=model, d=dataset: progress(m, d, row))
            every = [f"hardware={hardware}", *overrides]
            df = run_sweep(path, list(schedulers), loads, seeds, executor, every, each)
            # each request succeeds at most once (no re-send after a success), so good attempts
            # count the requests that succeeded
            stream = load_scenario(path, every).scenario.workload.num_requests
            frames.append(df.assign(model=model, dataset=dataset, unfinished=stream - df["num_good"]))
    return pd.concat(frames, ignore_index=True)


def ratio_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Per model, dataset and load: mean goodput (tokens/s) of each scheduler over seeds, and
    past-future over the best baseline and over aggressive (NaN where a part was not run)."""
    means = grid.groupby(["model", "dataset", "load", "scheduler"], sort=False)["goodput_tps"].mean().unstack("scheduler")
    means = means.reindex(columns=[*dict.fromkeys([*SCHEDULERS, *means.columns])])
    out = means.reset_index()
    best = means[list(BASELINES)].max(axis=1, skipna=False).to_numpy()
    pf = means["past-future"].to_numpy()
    out["pf_over_best_baseline"] = pf / best
    out["pf_over_aggressive"] = pf / means["aggressive"].to_numpy()
    return out


def plot_grid(grid: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One figure per model: goodput against clients, a panel per dataset, 95 % bands over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import plot_metric

    paths = []
    for model, g in grid.groupby("model", sort=False):
        datasets = list(dict.fromkeys(g["dataset"]))
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            plot_metric(ax, g[g["dataset"] == dataset], "goodput_tps", legend=ax is axes[0][0])
            ax.set_title(f"Llama-2-{model.upper()}, {dataset}")
        fig.tight_layout()
        path = out_dir / f"fig7-{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(grid: pd.DataFrame, ratios: pd.DataFrame, out: Path, plots: bool, overwrite: bool, settings: dict) -> list[Path]:
    prepare_folder(out, REPRODUCE, overwrite)
    try:
        grid.to_csv(out / "grid.csv", index=False)
        ratios.to_csv(out / "ratios.csv", index=False)
        paths = [out / "grid.csv", out / "ratios.csv"] + (plot_grid(grid, out) if plots else [])
        meta = {"run_id": new_run_id(), "command": REPRODUCE.command, "settings": settings,
                "files": manifest(out, ["grid.csv", "ratios.csv"])}
        (out / REPRODUCE.marker).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise write_error(out, e) from None
    return [*paths, out / REPRODUCE.marker]


def cmd_reproduce(args, console) -> int:
    from .sweep import parse_loads

    models = _choices(args.models, MODELS, "models")
    datasets = _choices(args.datasets, DATASETS, "datasets")
    schedulers = _choices(args.schedulers, SCHEDULERS, "schedulers")
    if args.seeds < 1:
        raise LlmsimError(f"--seeds: must be at least 1, got {args.seeds}")
    check_folder(args.out, REPRODUCE, args.overwrite)  # before any work
    if args.offline:
        return _cmd_offline(args, console, datasets, schedulers)
    loads = parse_loads(args.loads)
    if not args.max_simulated_s >= 0:
        raise LlmsimError(f"--max-simulated-s: must be 0 (no bound) or a positive number of seconds, got {args.max_simulated_s:g}")
    bound = [f"workload.duration_s={args.max_simulated_s:g}"] if args.max_simulated_s > 0 else []
    runs = len(models) * len(datasets) * len(schedulers) * len(loads) * args.seeds
    console.print(f"{runs:,} runs: {len(models)} models x {len(datasets)} datasets x {len(schedulers)} schedulers x "
                  f"{len(loads)} loads x {args.seeds} seeds, on {args.hardware}")
    from .terminal import count_progress

    with count_progress(console, "reproduce", "runs") as bar:
        task = bar.add_task("", total=runs)

        def progress(model, dataset, row):
            bar.advance(task)
            bar.update(task, description=f"{model} {dataset}: {row['scheduler']} @ {row['load']:g} clients seed {row['seed']}")

        grid = run_grid(models, datasets, loads, args.seeds, args.hardware, args.executor, [*bound, *args.overrides], progress,
                        schedulers)
    ratios = ratio_table(grid)
    settings = {"models": models, "datasets": datasets, "schedulers": schedulers, "loads": loads, "seeds": args.seeds,
                "hardware": args.hardware, "max_simulated_s": args.max_simulated_s or None, "overrides": args.overrides}
    paths = write_results(grid, ratios, args.out, not args.no_plots, args.overwrite, settings)
    shown = ratios[["model", "dataset", "load", *SCHEDULERS, "pf_over_best_baseline", "pf_over_aggressive"]]
    console.print(shown.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    cut = grid[grid["unfinished"] > 0]
    if len(cut):
        console.print(f"{len(cut)} of {len(grid)} runs stopped sending at the bound (--max-simulated-s {args.max_simulated_s:g}) "
                      f"with {int(cut['unfinished'].sum()):,} requests not yet succeeded (grid.csv: unfinished)")
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _cmd_offline(args, console, datasets, schedulers) -> int:
    """`--offline`: the artifact's offline behaviour table (llmsim.paper_offline)."""
    from .paper_offline import offline_table, summary
    from .terminal import count_progress

    runs = len(datasets) * len(schedulers) * args.seeds
    console.print(f"{runs:,} offline runs: {len(datasets)} datasets x {len(schedulers)} schedulers x {args.seeds} seeds "
                  "(scenarios/paper/offline-*.yaml: every request at t=0, KV 120,000 tokens)")
    with count_progress(console, "offline", "runs") as bar:
        task = bar.add_task("", total=runs)
        cells = offline_table(datasets, schedulers, args.seeds, args.executor, args.overrides,
                              lambda _i, row: bar.advance(task))
    table = summary(cells)
    prepare_folder(args.out, REPRODUCE, args.overwrite)
    try:
        cells.to_csv(args.out / "offline.csv", index=False)
        table.to_csv(args.out / "offline_summary.csv", index=False)
        settings = {"offline": True, "datasets": datasets, "schedulers": schedulers, "seeds": args.seeds, "overrides": args.overrides}
        meta = {"run_id": new_run_id(), "command": REPRODUCE.command, "settings": settings,
                "files": manifest(args.out, ["offline.csv", "offline_summary.csv"])}
        (args.out / REPRODUCE.marker).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise write_error(args.out, e) from None
    shown = table[["dataset", "scheduler", "decode_steps_to_last_admission", "artifact_steps", "diff_to_last_admission",
                   "steps", "diff_whole_run", "kv_use_to_last_admission", "evictions_per_request"]]
    fmt = {"diff_to_last_admission": "{:+.1%}", "diff_whole_run": "{:+.1%}", "kv_use_to_last_admission": "{:.1%}",
           "evictions_per_request": "{:.3f}"}
    console.print(shown.to_string(index=False, formatters={k: v.format for k, v in fmt.items()},
                                  float_format=lambda v: f"{v:,.0f}"))
    console.print(f"wrote {args.out / 'offline.csv'}, {args.out / 'offline_summary.csv'}")
    return 0
