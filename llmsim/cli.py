"""Command line: `llmsim run | validate | sweep | capacity | compare | plot | trace stats | trace convert |
calibrate-hardware | step-time | list`.

A thin layer over the Python API. User errors (`LlmsimError`) print one line to stderr and exit
with status 2, without a traceback; anything else is a bug and keeps its traceback. Output paths
are checked before anything runs, and a results folder holds one run's files (`llmsim.outputs`).
Units: times in seconds, rates in requests per second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .cli_args import Parser, non_negative_int
from .errors import LlmsimError
from .outputs import OUT_RULES, OVERWRITE_HELP
from .terminal import make_console, run_progress_columns, run_progress_update


def _add_scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--scheduler", metavar="KIND", help="override scheduler.kind (llmsim list schedulers)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.key=value",
                   help="override a scenario value, e.g. --set workload.num_requests=200 (repeatable)")
    p.add_argument("--seed", type=non_negative_int, help="override the scenario seed (0 or more)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llmsim", description="Discrete-event simulator of LLM serving clusters.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate one scenario, print a summary, write a results folder")
    _add_scenario_args(run)
    run.add_argument("--out", type=Path, metavar="DIR", help=f"results folder (default results/<scenario>-<scheduler>-seed<N>, the name made path-safe); {OUT_RULES}")
    run.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    run.add_argument("--quiet", action="store_true", help="no progress bar or table; print the results folder only")
    run.add_argument("--steps", action="store_true", help="also write steps.csv, a per-step time series (KV use, running and waiting requests, batch tokens); plot it with llmsim plot")
    val = sub.add_parser("validate", help="check a scenario (schema, files, capacity) without running it")
    _add_scenario_args(val)
    tr = sub.add_parser("trace", help="inspect or convert a request trace")
    trs = tr.add_subparsers(dest="trace_command", required=True)
    st = trs.add_parser("stats", help="request count, span, mean rate, burstiness, length percentiles")
    st.add_argument("file", type=Path)
    st.add_argument("--json", action="store_true", help="print the statistics as JSON")
    cv = trs.add_parser("convert", help="write any supported trace in llmsim's own CSV/JSONL format")
    cv.add_argument("file", type=Path)
    cv.add_argument("out", type=Path, help="output .csv or .jsonl (never the input file; its parent folder must exist)")
    cv.add_argument("--poisson-rate", type=float, metavar="REQ_PER_S",
                    help="draw Poisson arrival times at this rate: needed for a length table (no timestamps); "
                         "on a trace with recorded timestamps only together with --replace-timestamps")
    cv.add_argument("--replace-timestamps", action="store_true",
                    help="with --poisson-rate: discard the trace's recorded timestamps and write the Poisson ones instead")
    cv.add_argument("--seed", type=non_negative_int, default=0, help="seed for --poisson-rate (default 0)")
    for p in (st, cv):
        p.add_argument("--format", choices=["azure", "mooncake", "length-table", "llmsim"], help="default: detected from the file")
        p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows (counted and reported) instead of failing")
    cal = sub.add_parser("calibrate-hardware", help="measure this GPU (or CPU) with torch microbenchmarks and write a hardware profile")
    cal.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if torch sees a GPU")
    cal.add_argument("--models", default="llama-2-7b,llama-2-13b,llama-3.1-8b,mistral-7b,qwen2.5-7b",
                     help="comma-separated catalog models whose shapes to measure (default: the dense 7-13B models)")
    cal.add_argument("--tp", default="1", help="comma-separated tensor-parallel degrees, e.g. 1,2,4,8 (default 1)")
    cal.add_argument("--quick", action="store_true", help="a small grid (seconds on CPU; for tests and a first look)")
    cal.add_argument("--base", help="profile whose spec peaks and overheads to keep (default: the shipped one matching the GPU)")
    cal.add_argument("--out", type=Path, help="profile to write (default hardware_profiles/<device>.yaml); checked before any benchmark")
    cal.add_argument("--overwrite", action="store_true", help="replace an existing profile file at --out")
    from .step_time_command import add_parser as add_step_time

    add_step_time(sub)
    from .import_profile_command import add_parser as add_import_profile

    add_import_profile(sub)
    from .sweep_cli import add_parsers  # sweep, capacity, compare, plot

    add_parsers(sub)
    from .reproduce import add_parser as add_reproduce

    add_reproduce(sub)
    ls = sub.add_parser("list", help="list schedulers, routers, models and hardware profiles")
    ls.add_argument("what", nargs="?", choices=["schedulers", "routers", "models", "hardware"], help="one category (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    console = make_console()
    try:
        args = build_parser().parse_args(argv)  # a usage error is an LlmsimError (llmsim.cli_args)
        if hasattr(args, "handler"):
            return args.handler(args, console)
        if args.command == "run":
            return _run(args, console)
        if args.command == "validate":
            return _validate(args, console)
        if args.command == "trace":
            return _trace(args, console)
        if args.command == "calibrate-hardware":
            from .calibrate_command import run_calibration

            return run_calibration(args, console)
        return _list(args, console)
    except LlmsimError as e:
        for line in str(e).splitlines():
            print(f"llmsim: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmsim: interrupted", file=sys.stderr)
        return 130


def _run(args, console: Console) -> int:
    from .cluster.simulation import simulate
    from .config import load_scenario
    from .feasibility import scenario_notes
    from .outputs import RUN, check_folder, default_folder, prepare_folder, write_error
    from .report import print_summary, write_results

    overrides = list(args.overrides) + (["engine.record_steps=true"] if args.steps else [])
    loaded = load_scenario(args.scenario, overrides, args.scheduler, args.seed)
    sc = loaded.scenario
    out = args.out or default_folder(sc.name, sc.scheduler.kind, f"seed{sc.seed}")
    check_folder(out, RUN, args.overwrite)  # before simulating: a bad --out costs no time
    if args.quiet or not console.is_terminal:
        result = simulate(loaded)
    else:
        with Progress(*run_progress_columns(sc), console=console, transient=True) as bar:
            task = bar.add_task("sim", total=None, requests="all")
            result = simulate(loaded, progress=run_progress_update(sc, bar, task))
    result.notes.extend(scenario_notes(sc, loaded.base_dir))  # printed with the summary, kept in summary.json
    prepare_folder(out, RUN, args.overwrite)
    try:
        write_results(result, out)
    except OSError as e:
        raise write_error(out, e) from None
    if not args.quiet:
        print_summary(result, console)
        files = "requests.csv, summary.json, scenario.yaml" + (", steps.csv" if result.steps is not None else "")
        console.print(f"results: {out}/ ({files})  [{result.wall_s:.2f} s wall]")
    else:
        print(out)
    return 0


def _validate(args, console: Console) -> int:
    from .cluster.build import check_requests, longest_request_tokens, resolve
    from .config import load_scenario
    from .feasibility import scenario_notes
    from .workload import build_workload

    loaded = load_scenario(args.scenario, args.overrides, args.scheduler, args.seed)
    sc = loaded.scenario
    res = resolve(loaded)
    wl = build_workload(sc.workload, sc.seed, longest_request_tokens(sc, res))
    check_requests(sc, res, wl)
    console.print(f"[green]ok[/green] {args.scenario}: {sc.name}")
    console.print(f"  model {sc.model} ({res.model.num_params / 1e9:.2f} B params), hardware {sc.hardware} ({res.profile.calibration.fidelity}), "
                  f"{sc.cluster.replicas} replica(s) x TP {sc.cluster.tensor_parallel}, router {sc.cluster.router}")
    console.print(f"  KV capacity {res.kv_capacity_tokens:,} tokens ({res.total_blocks:,} blocks of {sc.engine.block_size}) per replica, max_model_len {res.max_model_len}")
    if wl.sessions is not None:
        load = f"{len(wl.sessions.turns):,} sessions ({sc.workload.arrivals.kind} starts)"
    elif wl.arrival_s is None:
        load = f"closed loop, {sc.workload.arrivals.clients} clients"
    else:
        load = f"open loop over {float(wl.arrival_s[-1] - wl.arrival_s[0]) if len(wl) > 1 else 0.0:,.1f} s"
    console.print(f"  workload: {len(wl):,} requests, {load}, prompt mean {wl.prompt_tokens.mean():.0f}, output mean {wl.output_tokens.mean():.0f} tokens, max_new_tokens {wl.cap_mode}")
    console.print(f"  scheduler {sc.scheduler.kind}, engine {sc.engine.mode}, preemption {sc.engine.preemption}")
    for note in [*wl.notes, *scenario_notes(sc, loaded.base_dir)]:
        console.print(f"  [yellow]note:[/yellow] {note}")
    return 0


def _read_trace(args):
    from .workload.readers import read_trace

    trace = read_trace(args.file, args.format, "skip" if args.skip_bad_rows else "error")
    if trace.skipped_rows:
        print(f"llmsim: warning: skipped {trace.skipped_rows} malformed rows of {args.file}", file=sys.stderr)
        for example in trace.skipped_examples:
            print(f"  {example}", file=sys.stderr)
    return trace


def _trace_convert(args, console: Console) -> int:
    import math

    from .feasibility import MAX_SIMULATED_S
    from .outputs import check_file, write_error
    from .workload.readers import write_llmsim_trace
    from .workload.trace_formats import JSONL_SUFFIXES

    rate = args.poisson_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise LlmsimError(f"--poisson-rate {rate:g}: must be a positive number of requests per second")
    if args.replace_timestamps and rate is None:
        raise LlmsimError("--replace-timestamps needs --poisson-rate REQ_PER_S (the rate of the new arrival times)")
    if args.out.suffix.lower() not in (".csv", *JSONL_SUFFIXES):
        raise LlmsimError(f"{args.out}: llmsim traces are .csv or .jsonl, not {args.out.suffix or 'no extension'!r}")
    check_file(args.out, overwrite=True, inputs=[args.file])  # before reading: never the input, a writable place
    trace = _read_trace(args)
    if trace.arrival_s is None and rate is None:
        raise LlmsimError(f"{args.file}: a length table has no timestamps; pass --poisson-rate REQ_PER_S to draw arrival times")
    if trace.arrival_s is not None and rate is not None and not args.replace_timestamps:
        raise LlmsimError(f"{args.file}: has recorded timestamps ({trace.format}) and --poisson-rate would discard them; "
                          "add --replace-timestamps to do that, or drop --poisson-rate to keep them")
    arrival = None
    if rate is not None and (len(trace) - 1) / rate > MAX_SIMULATED_S:
        raise LlmsimError(f"--poisson-rate {rate:g}: {len(trace):,} requests would arrive over about {(len(trace) - 1) / rate:.3g} s; "
                          f"llmsim keeps times to within a microsecond only up to {MAX_SIMULATED_S:g} s: raise the rate")
    if rate is not None:
        from .rng import stream
        from .workload.arrivals import poisson_arrivals

        arrival = poisson_arrivals(stream(args.seed, "workload/arrivals"), rate, n=len(trace))
    try:
        write_llmsim_trace(trace, args.out, arrival)
    except OSError as e:
        raise write_error(args.out, e) from None
    what = f"wrote {len(trace):,} requests ({trace.format} -> llmsim) to {args.out}"
    if rate is not None:
        what += f"; Poisson arrivals at {rate:g} req/s" + (" replace the recorded timestamps" if trace.arrival_s is not None else "")
    console.print(what)
    return 0


def _trace(args, console: Console) -> int:
    import json

    from .workload.readers import trace_stats

    if args.trace_command == "convert":
        return _trace_convert(args, console)
    trace = _read_trace(args)
    stats = trace_stats(trace)
    if args.json:
        print(json.dumps({"file": str(args.file), "format": trace.format, **stats}, indent=2))
        return 0
    console.print(f"[bold]{args.file}[/bold]  (format {trace.format})")
    console.print(f"  requests        {stats['requests']:,}")
    if stats["span_s"] is None:
        console.print("  arrivals        none recorded (a length table: arrival times come from the scenario)")
    else:
        rate = f"{stats['rate_per_s']:.3f} req/s" if stats["rate_per_s"] else "-"
        cv = f"{stats['burstiness_cv']:.2f}" if stats["burstiness_cv"] is not None else "-"
        console.print(f"  span            {stats['span_s']:,.1f} s")
        console.print(f"  mean rate       {rate}")
        console.print(f"  burstiness      CV of inter-arrival gaps {cv} (1 = Poisson); {stats['zero_gap_fraction']:.1%} of gaps are zero")
    table = Table(header_style="bold", box=None)
    table.add_column("tokens")
    for c in ("p50", "p90", "p99", "mean", "max"):
        table.add_column(c, justify="right")
    for name in ("input_tokens", "output_tokens"):
        d = stats[name]
        table.add_row(name.removesuffix("_tokens"), *(f"{d[c]:,.0f}" for c in ("p50", "p90", "p99", "mean", "max")))
    console.print(table)
    return 0


def _list(args, console: Console) -> int:
    from .registry import ROUTERS
    from .costmodel import list_models, list_profiles, load_model, load_profile
    from .schedulers import SCHEDULERS

    what = args.what
    if what in (None, "schedulers"):
        console.print("[bold]schedulers[/bold] (scheduler.kind)")
        for kind, spec in SCHEDULERS.items():
            console.print(f"  {kind:<14} {spec.summary}")
    if what in (None, "routers"):
        console.print("[bold]routers[/bold] (cluster.router)")
        for kind, entry in ROUTERS.items():
            console.print(f"  {kind:<26} {entry.summary}")
    if what in (None, "models"):
        console.print("[bold]models[/bold] (model)")
        for name in list_models():
            m = load_model(name)
            console.print(f"  {name:<16} {m.num_params / 1e9:6.2f} B params, {m.num_hidden_layers} layers, "
                          f"{m.num_attention_heads}/{m.num_key_value_heads} q/kv heads, KV {m.kv_bytes_per_token_per_gpu(1) / 1024:.0f} KiB/token")
    if what in (None, "hardware"):
        console.print("[bold]hardware profiles[/bold] (hardware)")
        for name in list_profiles([Path.cwd() / "hardware_profiles"]):
            p = load_profile(name, [Path.cwd() / "hardware_profiles"])
            console.print(f"  {name:<16} {p.hardware.device_name}, {p.hardware.memory_gib:g} GiB, fidelity {p.calibration.fidelity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
