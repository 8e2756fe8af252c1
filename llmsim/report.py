"""Reporting a run: the terminal table and the results folder.

Results folder: `requests.csv` (one row per request), `summary.json` (headline numbers, labels,
derived values), `scenario.yaml` (the fully resolved scenario, loadable by `llmsim run`), and
`steps.csv` when `engine.record_steps` is on. `summary.json` also records `run_id` (uuid4 hex, not
from the simulation's RNG) and `files`, the SHA-256 of each other file, so `llmsim plot` can refuse
a file another run left in the folder (`llmsim.outputs`), and `provenance` (llmsim version, git
commit when available, the hardware profile's fidelity, the resolved seed: `llmsim.provenance`).
Times in the files are in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from .cluster.simulation import SimulationResult
from .metrics import LATENCY_METRICS, SUMMARY_LABELS
from .outputs import RUN, manifest, new_run_id
from .provenance import provenance


def write_results(result: SimulationResult, out_dir: Path, run_id: str | None = None) -> Path:
    """Write the results folder; `summary.json` last, so a half-written folder fails `llmsim plot`'s check.

    `run_id` defaults to a fresh `llmsim.outputs.new_run_id()`. The folder is created; files already
    in it are not removed (`llmsim run` checks and clears it first, see `llmsim.outputs`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.requests.to_csv(out_dir / "requests.csv", index=False)
    header = "# Fully resolved scenario written by llmsim (defaults filled in, --set applied).\n"
    (out_dir / "scenario.yaml").write_text(header + yaml.safe_dump(result.scenario.resolved_dict(), sort_keys=False))
    written = ["requests.csv", "scenario.yaml"]
    if result.steps is not None:
        result.steps.to_csv(out_dir / "steps.csv", index=False)
        written.append("steps.csv")
    summary = dict(result.summary)
    summary["labels"] = SUMMARY_LABELS
    summary["derived"] = result.derived
    summary["notes"] = result.notes
    summary["provenance"] = provenance(result.derived.get("hardware_fidelity"), result.summary.get("seed"))
    summary["run_id"] = run_id or new_run_id()
    summary["files"] = manifest(out_dir, written)
    (out_dir / RUN.marker).write_text(json.dumps(summary, indent=2, allow_nan=False, default=_json_default) + "\n")
    return out_dir


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def print_summary(result: SimulationResult, console: Console) -> None:
    s, d = result.summary, result.derived
    sc = result.scenario
    title = f"{s['scenario']}  |  scheduler: {s['scheduler']}" + ("  (ORACLE: exact output lengths, not deployable)" if s["oracle_exact_lengths"] else "")
    console.print(f"[bold]{title}[/bold]")
    console.print(
        f"{sc.model} on {sc.cluster.replicas} x {sc.hardware} (TP {sc.cluster.tensor_parallel}, profile {d['hardware_fidelity']}), "
        f"KV {d['kv_capacity_tokens']:,} tokens/replica, engine {sc.engine.mode}, max_new_tokens {s['max_new_tokens_mode']}, seed {s['seed']}"
    )
    sla = ", ".join(f"{k} <= {v:g}" for k, v in s["sla"].items()) or "none set"
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    head.add_column(style="dim")
    rows = [
        ("requests", f"{s['num_finished']:,} finished of {s['num_requests']:,}", f"{s['duration_s']:,.1f} s simulated"),
        ("SLA", sla, ""),
        ("SLA attainment", f"{s['sla_attainment']:.1%}", f"{s['num_good']:,} good requests"),
        ("goodput", f"{s['goodput_rps']:.3f} req/s", "good requests per second"),
        ("goodput", f"{s['goodput_tps']:,.0f} tok/s", "prompt + output tokens of good requests per second"),
        ("throughput", f"{s['throughput_tps']:,.0f} tok/s", f"output tokens; {s['throughput_rps']:.3f} req/s finished"),
        ("evictions", f"{s['evictions']:,}", f"{s['eviction_rate']:.3f} per finished request, {s['evicted_requests']:,} requests evicted"),
        ("KV utilisation", f"{s['kv_util_mean']:.1%} mean", f"{s['kv_util_peak']:.1%} peak"),
    ]
    pc = s.get("prefix_cache")
    if pc is not None:
        per = ", ".join(f"{r['hit_rate_tokens']:.1%}" for r in pc["per_replica"])
        rows.append(("prefix cache hits", f"{pc['hit_rate_tokens']:.1%} of tokens",
                     f"{pc['hit_rate_blocks']:.1%} of blocks; per replica (tokens): {per}"))
    for r in rows:
        head.add_row(*r)
    console.print(head)
    lat = Table(title=None, header_style="bold")
    lat.add_column("latency (s)")
    for c in ("p50", "p90", "p99", "mean", "max"):
        lat.add_column(c, justify="right")
    for name in LATENCY_METRICS:
        dist = s[name]
        lat.add_row(name.removesuffix("_s"), *(_fmt(dist[c]) for c in ("p50", "p90", "p99", "mean", "max")))
    console.print(lat)
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
