"""Command line for many-run studies: `llmsim sweep | capacity | compare | plot`.

`add_parsers(subparsers)` registers the four sub-commands on llmsim's argparse sub-parsers; each
stores its handler as `args.handler`, called as `args.handler(args, console)` and returning the
exit status. Bad input raises `LlmsimError`, which `llmsim.cli.main` prints as one line (exit 2).
Output paths are checked before any run; a sweep folder's `sweep.json` records its run id and the
SHA-256 of its tables, capacity.json those of probes.csv (`llmsim.outputs`).
Loads are in the scenario's knob unit: req/s (open loop) or clients (closed loop); times in s.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .cli_args import finite_float, positive_int
from .errors import LlmsimError
from .outputs import OUT_RULES, OVERWRITE_HELP
from .terminal import count_progress as _progress

EXECUTOR_HELP = "local (all cores), local:N, dask://HOST:PORT (a running Dask scheduler) or dask://local[:N] (a Dask LocalCluster)"


def _common(p: argparse.ArgumentParser, executor: bool = True) -> None:
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                   help="override a scenario value, e.g. --set workload.num_requests=500 (repeatable)")
    if executor:
        p.add_argument("--executor", default="local", metavar="SPEC", help=f"where runs go: {EXECUTOR_HELP} (default local)")


def _schedulers(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def add_parsers(sub) -> None:
    """Register sweep, capacity, compare and plot on `sub` (from ArgumentParser.add_subparsers)."""
    sw = sub.add_parser("sweep", help="run schedulers x loads x seeds; write sweep.parquet, sweep.csv and figures")
    _common(sw)
    sw.add_argument("--schedulers", default="aggressive,conservative,past-future,oracle", metavar="A,B",
                    help="comma-separated scheduler kinds (default: aggressive,conservative,past-future,oracle)")
    sw.add_argument("--loads", required=True, metavar="LIST|START:STOP:STEP",
                    help="loads of the scenario's knob (req/s open loop, clients closed loop): 1,2,4 or 1:8:1 (STOP included)")
    sw.add_argument("--seeds", type=positive_int, default=1, metavar="N", help="replications per point: seeds scenario seed + 0..N-1 (default 1)")
    sw.add_argument("--out", type=Path, metavar="DIR", help=f"output folder (default results/sweep-<scenario>, the name made path-safe); {OUT_RULES}")
    sw.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    sw.add_argument("--no-plots", action="store_true", help="write the tables only (with --overwrite, old figures are removed too)")
    sw.set_defaults(handler=cmd_sweep)

    cap = sub.add_parser("capacity", help="largest load a scheduler sustains under the SLA (bracket + bisect, over seeds)")
    _common(cap)
    cap.add_argument("--scheduler", metavar="KIND", help="scheduler kind (default: the scenario's)")
    cap.add_argument("--target-attainment", type=finite_float, default=0.9, metavar="FRACTION",
                     help="required SLA attainment after warm-up, 0-1 (default 0.9)")
    cap.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="independent searches, for the interval (default 3)")
    cap.add_argument("--warmup-fraction", type=finite_float, default=0.1, metavar="FRACTION",
                     help="drop this fraction of requests (by arrival) before judging a run (default 0.1)")
    cap.add_argument("--start-load", type=finite_float, metavar="LOAD", help="first probe (default: the scenario's own load)")
    cap.add_argument("--rel-tol", type=finite_float, default=0.02, metavar="FRACTION", help="stop bisecting at this relative bracket width (default 0.02)")
    cap.add_argument("--out", type=Path, metavar="DIR", help=f"also write capacity.json and probes.csv in this folder; {OUT_RULES}")
    cap.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    cap.set_defaults(handler=cmd_capacity)

    cmp_ = sub.add_parser("compare", help="every scheduler on the same request stream at the scenario's own load, side by side")
    _common(cmp_)
    cmp_.add_argument("--schedulers", metavar="A,B", help="comma-separated kinds (default: the scenario's compare.schedulers, else aggressive,conservative,past-future,oracle)")
    cmp_.add_argument("--vary", action="append", default=[], metavar="dotted.key=V1,V2",
                      help="also compare these values of a scenario key (repeatable: every combination), "
                           "e.g. --vary cluster.router=least-outstanding-tokens,prefix-affinity (default: the scenario's compare.vary)")
    cmp_.add_argument("--out", type=Path, metavar="FILE", help="also write the table as CSV; its parent folder must exist, "
                      "and an existing file is refused unless --overwrite (checked before anything runs)")
    cmp_.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    cmp_.set_defaults(handler=cmd_compare)

    pl = sub.add_parser("plot", help="figures of a results folder (llmsim run) or a sweep folder (llmsim sweep)",
                        description="Draw a results folder's figures into it. Refuses a data file that the run recorded "
                                    "in summary.json/sweep.json did not write (left by another run, or edited).")
    pl.add_argument("results_dir", type=Path, help="folder with requests.csv (+ steps.csv) or sweep.parquet/sweep.csv")
    pl.set_defaults(handler=cmd_plot)


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _num(v, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def _load(v, knob: str | None) -> str:
    from .sweep import CLIENTS_KNOB

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "own"
    return f"{int(v)}" if knob == CLIENTS_KNOB else f"{v:g}"


def _sweep_folder(args) -> Path:
    """The sweep's output folder, checked before anything runs (`llmsim.outputs.check_folder`)."""
    from .outputs import SWEEP, check_folder, default_folder

    if args.out is not None:
        out = args.out
    else:
        from .config import load_scenario

        out = default_folder("sweep", load_scenario(args.scenario, args.overrides).scenario.name)
    check_folder(out, SWEEP, args.overwrite)
    return out


def _sweep_provenance(df) -> dict:
    """`llmsim.provenance` for a sweep: its rows' hardware fidelity (one value, or a list if the
    rows differ), the resolved scenario seed (the smallest: a sweep runs seed + 0..N-1) and
    `seeds`, every seed a row ran with."""
    from .provenance import provenance

    fidelity = sorted({str(f) for f in df["hardware_fidelity"]}) if "hardware_fidelity" in df else []
    seeds = sorted({int(s) for s in df["seed"]})
    block = provenance(fidelity[0] if len(fidelity) == 1 else (fidelity or None), seeds[0] if seeds else None)
    block["seeds"] = seeds
    return block


def write_sweep_folder(df, out: Path, plots: bool, overwrite: bool = False) -> list[Path]:
    """Clear the sweep's old files from `out`, write the tables (+ figures) and `sweep.json`.

    `sweep.json` holds `run_id` and `provenance` (both also in the Parquet file's metadata,
    `df.attrs['llmsim_run_id']` and `df.attrs['llmsim_provenance']`), the row count and the SHA-256
    of `sweep.parquet` and `sweep.csv`.
    """
    from .outputs import SWEEP, manifest, new_run_id, prepare_folder, write_error
    from .sweep import write_sweep

    run_id = new_run_id()
    prepare_folder(out, SWEEP, overwrite)
    df.attrs["llmsim_run_id"] = run_id
    df.attrs["llmsim_provenance"] = _sweep_provenance(df)
    try:
        paths = write_sweep(df, out, plots=plots)
        meta = {"run_id": run_id, "command": SWEEP.command, "scenario": str(df["scenario"].iloc[0]), "rows": len(df),
                "provenance": df.attrs["llmsim_provenance"], "files": manifest(out, ["sweep.parquet", "sweep.csv"])}
        (out / SWEEP.marker).write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise write_error(out, e) from None
    return [*paths, out / SWEEP.marker]


def cmd_sweep(args, console: Console) -> int:
    from .sweep import aggregate, parse_loads, run_sweep

    loads = parse_loads(args.loads)
    schedulers = _schedulers(args.schedulers) or []
    out = _sweep_folder(args)
    total = len(schedulers) * len(loads) * max(args.seeds, 1)
    with _progress(console, "sweep", "runs") as bar:
        task = bar.add_task("", total=total)

        def progress(done, _total, row):
            bar.update(task, completed=done, description=f"{row['scheduler']} @ {_load(row['load'], row['load_knob'])} seed {row['seed']}")

        df = run_sweep(args.scenario, schedulers, loads, args.seeds, args.executor, args.overrides, progress)
    paths = write_sweep_folder(df, out, plots=not args.no_plots, overwrite=args.overwrite)
    knob = df["load_knob"].iloc[0]
    unit = "clients" if knob.endswith("clients") else "req/s"
    table = Table(header_style="bold", box=None, pad_edge=False, title=f"{df['scenario'].iloc[0]}: {len(df)} runs, mean over {args.seeds} seed(s)")
    for col in ("scheduler", f"load\n{unit}", "goodput\nreq/s", "goodput\ntok/s", "SLA\nattained", "p99\nTTFT s", "p99 max\nTBT s", "evictions\nper req"):
        table.add_column(col, justify="left" if col == "scheduler" else "right", no_wrap=True)
    for _, r in aggregate(df).iterrows():
        table.add_row(r["scheduler"], _load(r["load"], knob), _num(r["goodput_rps"]), _num(r["goodput_tps"], 0), _pct(r["sla_attainment"]),
                      _num(r["ttft_s_p99"]), _num(r["max_tbt_s_p99"]), _num(r["eviction_rate"]))
    console.print(table)
    console.print(f"wrote {out}/: " + ", ".join(p.name for p in paths))
    return 0


VERDICT_STYLE = {"stable": "green", "backlogged": "yellow", "overloaded": "red"}


def cmd_capacity(args, console: Console) -> int:
    from .capacity import find_capacity
    from .config import load_scenario
    from .outputs import CAPACITY, check_folder

    if args.out is not None:
        check_folder(args.out, CAPACITY, args.overwrite)  # before any probe runs
    scheduler = args.scheduler or load_scenario(args.scenario, args.overrides).scenario.scheduler.kind
    with _progress(console, f"capacity of {scheduler}", "probes", eta=False) as bar:
        task = bar.add_task("", total=None)

        def progress(done, row):
            bar.update(task, completed=done, description=f"seed {row['seed']} @ {row['load']:g}: {row['verdict']}")

        res = find_capacity(args.scenario, scheduler, args.target_attainment, args.seeds, args.overrides, args.executor,
                            args.warmup_fraction, start_load=args.start_load, rel_tol=args.rel_tol, progress=progress)
    unit = res.load_unit
    table = Table(header_style="bold", box=None, pad_edge=False, title=f"{res.scenario}, {scheduler}: {len(res.probes)} probes "
                  f"(attainment after dropping the first {res.warmup_fraction:.0%} of requests)")
    for col in ("seed", f"load\n{unit}", "SLA\nattained", "queue delay s,\nfirst third", "queue delay s,\nlast third", "goodput\nreq/s", "verdict"):
        table.add_column(col, justify="left" if col == "verdict" else "right", no_wrap=True)
    for _, p in res.probes.iterrows():
        style = VERDICT_STYLE.get(p["verdict"], "")
        table.add_row(str(p["seed"]), _load(p["load"], res.load_knob), _pct(p["attainment"]), _num(p["queue_delay_first_third_s"]),
                      _num(p["queue_delay_last_third_s"]), _num(p["goodput_rps"]), f"[{style}]{p['verdict']}[/{style}]")
    console.print(table)
    per_seed = ", ".join(f"{s}: {_num(k, 2)}" for s, k in zip(res.seeds, res.knee_per_seed))
    if math.isnan(res.knee_ci95[0]):
        interval = "no interval with one seed (use --seeds 3)" if len(res.seeds) == 1 else "no interval (too few seeds bracketed the knee)"
    else:
        interval = f"95 % interval {res.knee_ci95[0]:,.2f} to {res.knee_ci95[1]:,.2f} over {len(res.seeds)} seeds"
    console.print(f"[bold]capacity at {res.target_attainment:.0%} SLA attainment: {_num(res.knee_mean, 2)} {unit}[/bold]  ({interval})")
    console.print(f"  per seed: {per_seed}")
    for note in res.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if args.out:
        _write_capacity(res, args.out, args.overwrite)
        console.print(f"wrote {args.out}/: capacity.json, probes.csv")
    return 0


def _write_capacity(res, out: Path, overwrite: bool) -> None:
    """probes.csv, then capacity.json with the summary, notes, `run_id` and the SHA-256 of probes.csv."""
    from .outputs import CAPACITY, manifest, new_run_id, prepare_folder, write_error

    prepare_folder(out, CAPACITY, overwrite)
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.summary().items()}
    summary["knee_per_seed"] = [None if math.isnan(k) else k for k in res.knee_per_seed]
    try:
        res.probes.to_csv(out / "probes.csv", index=False)
        meta = {"run_id": new_run_id(), "files": manifest(out, ["probes.csv"])}
        (out / CAPACITY.marker).write_text(json.dumps({**summary, "notes": res.notes, **meta}, indent=2) + "\n")
    except OSError as e:
        raise write_error(out, e) from None


COMPARE_ROWS = (
    ("goodput_rps", "goodput (req/s)", _num), ("goodput_tps", "goodput (tok/s)", lambda v: _num(v, 0)),
    ("sla_attainment", "SLA attainment", _pct), ("throughput_tps", "output throughput (tok/s)", lambda v: _num(v, 0)),
    ("ttft_s_p50", "TTFT p50 (s)", _num), ("ttft_s_p99", "TTFT p99 (s)", _num), ("tpot_s_p50", "TPOT p50 (s)", _num),
    ("max_tbt_s_p99", "max TBT p99 (s)", _num), ("e2e_s_p50", "E2E p50 (s)", _num), ("queue_delay_s_mean", "queueing delay mean (s)", _num),
    ("evictions", "evictions", lambda v: f"{int(v):,}"), ("eviction_rate", "evictions / finished req", _num),
    ("kv_util_mean", "KV use, mean", _pct), ("kv_util_peak", "KV use, peak", _pct),
    ("dropped", "dropped", lambda v: f"{int(v):,}"), ("aborted", "aborted", lambda v: f"{int(v):,}"),
    ("prefix_cache_hit_rate_tokens", "prefix cache hits (tokens)", _pct),
    ("prefix_cache_hit_rate_blocks", "prefix cache hits (blocks)", _pct),
)


def cmd_compare(args, console: Console) -> int:
    from .outputs import check_file
    from .sweep import compare_plan, compare_schedulers, parse_vary

    if args.out is not None:  # before any run: never the scenario, an existing file only with --overwrite
        check_file(args.out, args.overwrite, inputs=[Path(args.scenario)])
    schedulers, vary = compare_plan(args.scenario, _schedulers(args.schedulers), args.overrides, parse_vary(args.vary))
    with _progress(console, "compare", "runs") as bar:
        task = bar.add_task("", total=len(schedulers) * math.prod(len(v) for _, v in vary))
        df = compare_schedulers(args.scenario, schedulers, args.overrides, args.executor, vary=vary,
                                progress=lambda done, _t, row: bar.update(task, completed=done, description=row["scheduler"]))
    first = df.iloc[0]
    load = "" if "load_knob" not in df or not first["load_knob"] else f", {first['load_knob'].rsplit('.', 1)[1]} = {_load(first['load'], first['load_knob'])}"
    table = Table(header_style="bold", box=None, pad_edge=False, title=f"{first['scenario']}: {int(first['num_requests']):,} requests{load}, seed {first['seed']}")
    table.add_column("metric", no_wrap=True)
    variants = df["variant"] if "variant" in df else [""] * len(df)
    for s, v in zip(df["scheduler"], variants):
        label = "oracle*" if s == "oracle" else s
        table.add_column(label + ("\n" + v.replace(", ", "\n") if v else ""), justify="right", no_wrap=True)
    for col, label, fmt in COMPARE_ROWS:
        if col in df.columns:
            table.add_row(label, *(fmt(v) for v in df[col]))
    console.print(table)
    from .plots import sla_text

    console.print(f"[dim]{sla_text(df)}[/dim]")
    if "oracle" in set(df["scheduler"]):
        console.print("[dim]* oracle admits with every request's exact output length: not deployable, and not an upper bound on goodput[/dim]")
    if args.out:
        from .outputs import write_error

        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)  # only ./results can be missing (checked)
            df.to_csv(args.out, index=False)
        except OSError as e:
            raise write_error(args.out, e) from None
        console.print(f"wrote {args.out}")
    return 0


def cmd_plot(args, console: Console) -> int:
    from .outputs import check_path
    from .plots import check_run_folder, check_sweep_folder, plot_run, plot_sweep
    from .sweep import read_sweep

    d: Path = args.results_dir
    if d.exists() and not d.is_dir():
        raise LlmsimError(f"{d}: is a file; give the results folder that holds it")
    if not d.is_dir():
        raise LlmsimError(f"{d}: no such folder")
    check_path(d)  # the figures go into it
    sweep = (d / "sweep.parquet").exists() or (d / "sweep.csv").exists()
    for note in check_sweep_folder(d) if sweep else check_run_folder(d):
        console.print(f"[yellow]note:[/yellow] {note}")
    if sweep:
        paths = plot_sweep(read_sweep(d), d)
    else:
        paths = plot_run(d, check=False)
        if not (d / "steps.csv").exists():
            console.print("[yellow]note:[/yellow] no steps.csv (run with --set engine.record_steps=true for the time series)")
    for p in paths:
        console.print(f"wrote {p}")
    return 0
