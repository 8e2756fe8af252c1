"""Figures (matplotlib, Agg backend: files only, no display needed) for sweeps and single runs.

- `plot_sweep(df, out_dir)`: from a `llmsim.sweep` table, one line per scheduler against load
  (req/s or clients), with a band for the t-based 95 % interval over seeds when there are several:
  `goodput.png` (req/s and tok/s, two panels), `sla_attainment.png`, `tail_latency.png` (p99 TTFT
  and p99 max time between tokens, SLA limits dashed), `eviction_rate.png`.
- `plot_run(results_dir)`: from one `llmsim run` results folder: `timeseries.png` (KV use,
  running and waiting requests, batch tokens per step, evictions marked; needs `steps.csv`, i.e.
  `engine.record_steps: true`) and `latency_cdf.png` (CDFs of TTFT, max time between tokens and
  E2E latency, SLA limits dashed).
- `plot_metric(ax, df, metric)`: one panel of a sweep figure, for composing your own (notebooks).
- `check_run_folder(dir)`, `check_sweep_folder(dir)`: raise `LlmsimError` when a data file there was
  not written by the run that `summary.json` / `sweep.json` records (a file another run left, or an
  edited one), so one run's title never sits over another run's data; `plot_run` checks first.

All functions return the paths they wrote. Times are in seconds, loads in the knob's unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import LlmsimError  # noqa: E402
from .results_tables import REQUESTS_COLUMNS, REQUESTS_NUMERIC, STEPS_COLUMNS, read_table  # noqa: E402
from .sweep import CLIENTS_KNOB, RATE_KNOB, aggregate  # noqa: E402

SCHEDULER_STYLE = {
    "aggressive": {"color": "tab:red", "marker": "o"},
    "conservative": {"color": "tab:blue", "marker": "s"},
    "past-future": {"color": "tab:green", "marker": "^"},
    "oracle": {"color": "black", "marker": "D", "linestyle": "--"},
    "reserve-peak": {"color": "tab:purple", "marker": "v"},
}
METRIC_LABELS = {
    "goodput_rps": "goodput (req/s)",
    "goodput_tps": "goodput (tok/s, prompt + output)",
    "sla_attainment": "SLA attainment (% of requests)",
    "ttft_s_p99": "p99 time to first token (s)",
    "max_tbt_s_p99": "p99 max time between tokens (s)",
    "eviction_rate": "evictions per finished request",
    "throughput_tps": "throughput (output tok/s)",
    "e2e_s_p50": "median end-to-end latency (s)",
    "queue_delay_s_mean": "mean queueing delay (s)",
    "kv_util_mean": "mean KV-cache use (%)",
}
PERCENT_METRICS = {"sla_attainment", "kv_util_mean"}
SLA_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "max_tbt_s": "max TBT", "e2e_s": "E2E"}
DPI = 130


def load_label(load_knob: str | None) -> str:
    if load_knob == RATE_KNOB:
        return "arrival rate (req/s)"
    if load_knob == CLIENTS_KNOB:
        return "concurrent clients (closed loop)"
    return "load"


def sla_text(df_or_sla) -> str:
    """'SLA: TTFT <= 10 s, max TBT <= 1.5 s' from a sweep table's sla_* columns or an sla dict."""
    if isinstance(df_or_sla, pd.DataFrame):
        sla = {k: df_or_sla[f"sla_{k}"].iloc[0] for k in SLA_NAMES if f"sla_{k}" in df_or_sla.columns}
    else:
        sla = dict(df_or_sla or {})
    parts = [f"{SLA_NAMES.get(k, k)} ≤ {v:g} s" for k, v in sla.items() if v is not None and not pd.isna(v)]
    return "SLA: " + (", ".join(parts) if parts else "none set")


def plot_metric(ax, df: pd.DataFrame, metric: str, schedulers: Sequence[str] | None = None, band: bool = True,
                legend: bool = False) -> None:
    """Mean over seeds per scheduler and load, with the 95 % interval as a band (several seeds)."""
    agg = aggregate(df, [metric])
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    for sched in schedulers or list(dict.fromkeys(df["scheduler"])):
        g = agg[agg["scheduler"] == sched].sort_values("load")
        if g.empty:
            continue
        style = {"color": "tab:gray", "marker": "o", **SCHEDULER_STYLE.get(sched, {})}
        label = f"{sched} (exact lengths)" if sched == "oracle" else sched
        ax.plot(g["load"], g[metric] * scale, label=label, markersize=4, linewidth=1.6, **style)
        if band and (g["seeds"] > 1).any():
            lo, hi = g[f"{metric}_lo"].clip(lower=0.0) * scale, g[f"{metric}_hi"] * scale  # metrics are >= 0
            if metric in PERCENT_METRICS:
                hi = hi.clip(upper=100.0)
            ax.fill_between(g["load"], lo, hi, color=style["color"], alpha=0.14, linewidth=0)
    ax.set_xlabel(load_label(df["load_knob"].iloc[0] if "load_knob" in df else None))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def _band_note(df: pd.DataFrame) -> str:
    n = int(df.groupby(["scheduler", "load"]).size().min())
    return f"lines: mean of {n} seeds; bands: 95 % interval (t)" if n > 1 else "one seed per point"


def plot_sweep(df: pd.DataFrame, out_dir) -> list[Path]:
    """goodput.png, sla_attainment.png, tail_latency.png, eviction_rate.png in `out_dir`."""
    if df.empty:
        raise LlmsimError("plot: the sweep table is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = df["scenario"].iloc[0]
    sub = f"{sla_text(df)}\n{_band_note(df)}"
    figures = {
        "goodput.png": (["goodput_rps", "goodput_tps"], "goodput vs load"),
        "sla_attainment.png": (["sla_attainment"], "SLA attainment vs load"),
        "tail_latency.png": (["ttft_s_p99", "max_tbt_s_p99"], "tail latency vs load"),
        "eviction_rate.png": (["eviction_rate"], "evictions vs load"),
    }
    paths = []
    for fname, (metrics, what) in figures.items():
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics) + 1.0, 4.4), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            plot_metric(ax, df, metric)
            limit = _sla_limit(df, metric)
            if limit is not None:
                ax.axhline(limit, color="gray", linestyle=":", linewidth=1.2, label=f"SLA limit {limit:g} s")
                ax.legend(fontsize=8, loc="best")
            if metric == "sla_attainment":
                ax.set_ylim(-2, 102)
            else:
                ax.set_ylim(bottom=0)
        axes[0][-1].legend(fontsize=8, loc="best")
        fig.suptitle(f"{name}: {what}\n{sub}", fontsize=10)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        paths.append(path)
    return paths


def _sla_limit(df: pd.DataFrame, metric: str) -> float | None:
    col = "sla_" + metric.rsplit("_", 1)[0]  # ttft_s_p99 -> sla_ttft_s
    if metric.endswith("_p99") and col in df.columns and not pd.isna(df[col].iloc[0]):
        return float(df[col].iloc[0])
    return None


# ------------------------------------------------------------------------------- one run's files
def _read_marker(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LlmsimError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(data, dict):
        raise LlmsimError(f"{path}: not an llmsim record (expected a JSON object)")
    return data


def check_run_folder(results_dir) -> list[str]:
    """Raise unless requests.csv (and steps.csv, if there) are the files summary.json's run wrote; notes."""
    from .outputs import RUN, check_files

    d = Path(results_dir)
    if not (d / "requests.csv").exists():
        raise LlmsimError(f"{d}: not a results folder (no requests.csv); run `llmsim run` first")
    if not (d / RUN.marker).exists():
        raise LlmsimError(f"{d}: no {RUN.marker}, so no record of which run wrote requests.csv; rerun `llmsim run`")
    return check_files(d, _read_marker(d / RUN.marker), RUN.marker, ["requests.csv", "steps.csv"])


def check_sweep_folder(sweep_dir) -> list[str]:
    """Raise unless sweep.parquet / sweep.csv are the files sweep.json's run wrote; notes."""
    from .outputs import SWEEP, check_files

    d = Path(sweep_dir)
    if not (d / SWEEP.marker).exists():
        return [f"{d}: no {SWEEP.marker} (written by an older llmsim or by write_sweep): cannot check that its tables come from one run"]
    return check_files(d, _read_marker(d / SWEEP.marker), SWEEP.marker, ["sweep.parquet", "sweep.csv"])


# ------------------------------------------------------------------------------- one run
def read_run(results_dir) -> tuple[dict, pd.DataFrame, pd.DataFrame | None]:
    """(summary.json, requests.csv, steps.csv or None) of a results folder (not checked: see check_run_folder)."""
    d = Path(results_dir)
    if not (d / "requests.csv").exists():
        raise LlmsimError(f"{d}: not a results folder (no requests.csv); run `llmsim run` first")
    summary = _read_marker(d / "summary.json") if (d / "summary.json").exists() else {}
    steps = read_table(d / "steps.csv", STEPS_COLUMNS, STEPS_COLUMNS) if (d / "steps.csv").exists() else None
    return summary, read_table(d / "requests.csv", REQUESTS_COLUMNS, REQUESTS_NUMERIC), steps


def plot_steps(axes, steps: pd.DataFrame, kv_blocks: int, title: str | None = None) -> None:
    """KV use, running/waiting and batch tokens per step on three axes (shared time axis)."""
    ax_kv, ax_q, ax_b = axes
    multi = steps["replica"].nunique() > 1
    for rep, g in steps.groupby("replica"):
        tag = f" (replica {rep})" if multi else ""
        t = g["start_s"].to_numpy()
        ax_kv.plot(t, 100.0 * g["used_blocks"] / kv_blocks, drawstyle="steps-post", linewidth=0.9, label=f"KV blocks in use{tag}")
        ax_q.plot(t, g["running"], drawstyle="steps-post", linewidth=0.9, color="tab:green" if not multi else None, label=f"running{tag}")
        ax_q.plot(t, g["waiting"], drawstyle="steps-post", linewidth=0.9, color="tab:orange" if not multi else None, label=f"waiting{tag}")
        tokens = g["decode_seqs"] + g["prefill_tokens"]
        prefill = g["prefill_tokens"] > 0
        ax_b.scatter(t[~prefill], tokens[~prefill], s=2, color="tab:blue", label="decode-only step" if rep == 0 else None, rasterized=True)
        ax_b.scatter(t[prefill], tokens[prefill], s=4, color="tab:purple", label="step with prefill" if rep == 0 else None, rasterized=True)
        ev = np.flatnonzero(np.diff(g["evictions_so_far"].to_numpy(), prepend=0) > 0)
        if len(ev):
            ax_kv.scatter(t[ev], 100.0 * g["used_blocks"].to_numpy()[ev] / kv_blocks, marker="x", s=18, color="tab:red", zorder=3,
                          label=f"eviction ({int(g['evictions_so_far'].iloc[-1])} in all)" if rep == 0 or not multi else None)
            for ax in (ax_q, ax_b):
                ax.vlines(t[ev], 0, 1, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.15, linewidth=0.6)
    ax_kv.set_ylabel("KV cache in use (% of blocks)")
    ax_kv.set_ylim(0, 105)
    ax_q.set_ylabel("requests")
    ax_b.set_yscale("log")  # decode-only steps (one token per sequence) and prefills differ 100-fold
    ax_b.set_ylabel("batch tokens per step (log)")
    ax_b.set_xlabel("simulated time (s)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", markerscale=2)
    if title:
        ax_kv.set_title(title, fontsize=10)


def plot_latency_cdfs(axes, requests: pd.DataFrame, sla: dict, label: str | None = None, color=None) -> None:
    """Empirical CDFs of TTFT, max TBT and E2E of finished requests on three axes."""
    fin = requests[requests["finished"].astype(bool)]
    for ax, col in zip(axes, ("ttft_s", "max_tbt_s", "e2e_s")):
        v = np.sort(fin[col].dropna().to_numpy(dtype=float))
        if len(v):
            ax.plot(v, 100.0 * np.arange(1, len(v) + 1) / len(v), drawstyle="steps-post", label=label, color=color)
            if v[0] > 0 and v[-1] / v[0] > 100:
                ax.set_xscale("log")
        limit = sla.get(col)
        if limit is not None and not any(t.get_text() == f"SLA {limit:g} s " for t in ax.texts):  # once per axis
            ax.axvline(limit, color="gray", linestyle=":", linewidth=1.2)
            ax.text(limit, 50, f"SLA {limit:g} s ", rotation=90, ha="right", va="center", fontsize=8, color="dimgray")
        name = {"ttft_s": "time to first token (s)", "max_tbt_s": "max time between tokens (s)", "e2e_s": "end-to-end latency (s)"}[col]
        ax.set_xlabel(name + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("requests at or below (%)")
        ax.set_ylim(0, 101)
        ax.grid(True, alpha=0.3)


def plot_run(results_dir, check: bool = True) -> list[Path]:
    """timeseries.png (when steps.csv exists) and latency_cdf.png, written into `results_dir`.

    With `check` (the default), `check_run_folder` first: files from different runs are refused.
    """
    d = Path(results_dir)
    if check:
        check_run_folder(d)
    summary, requests, steps = read_run(d)
    name = f"{summary.get('scenario', d.name)}, scheduler {summary.get('scheduler', '?')}"
    sla = summary.get("sla", {})
    paths = []
    if steps is not None and len(steps):
        kv_blocks = summary.get("derived", {}).get("kv_blocks") or int(steps["used_blocks"].max()) or 1
        fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
        plot_steps(axes, steps, kv_blocks)
        fig.suptitle(f"{name}: per-step time series ({len(steps):,} steps, KV {kv_blocks:,} blocks per replica)", fontsize=10)
        fig.tight_layout()
        fig.savefig(d / "timeseries.png", dpi=DPI)
        plt.close(fig)
        paths.append(d / "timeseries.png")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    plot_latency_cdfs(axes, requests, sla)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fin = int(requests["finished"].astype(bool).sum())
    attain = f", SLA attainment {summary['sla_attainment']:.1%}" if "sla_attainment" in summary else ""
    fig.suptitle(f"{name}: latency CDFs of {fin:,} finished requests{attain}\n{sla_text(sla)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(d / "latency_cdf.png", dpi=DPI)
    plt.close(fig)
    paths.append(d / "latency_cdf.png")
    return paths
