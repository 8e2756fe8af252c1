"""Load sweeps and scheduler comparisons: many runs of one scenario, one table.

A *point* is one run: (scenario, scheduler, load, seed). Points are pure functions of those four
values (every random choice flows from the seed), so a sweep gives the same table whichever
executor runs it (`llmsim.executors`) and in whatever order the points finish.

The *load* is the scenario's load knob, found from its arrival process:
- open loop (`poisson`, `gamma`, `trace`): `workload.arrivals.rate_per_s`, requests per second
  (for a trace, the recorded timestamps are rescaled to that mean rate, keeping their burstiness);
- closed loop: `workload.arrivals.clients`, a whole number of concurrent clients.
`all-at-once` arrivals have no load knob (they can still be compared, at their own load).

`run_sweep` returns one row per scheduler x load x seed (seed = scenario seed + i): `scenario`,
`scheduler`, `load_knob`, `load`, `seed`, then every number of the run's summary flattened
(`ttft_s_p99`, `sla_ttft_s`, `goodput_rps`, ...; an undefined latency percentile is NaN) and
`arrival_mode` (the summary's open-loop/closed-loop label). `write_sweep` writes it as
`sweep.parquet` and `sweep.csv` with figures (`llmsim.plots`). Units are in the column names.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import LlmsimError
from .executors import Executor, make_executor

RATE_KNOB = "workload.arrivals.rate_per_s"
CLIENTS_KNOB = "workload.arrivals.clients"
COMPARE_SCHEDULERS = ("aggressive", "conservative", "past-future", "oracle")
ID_COLUMNS = ("scenario", "scheduler", "load_knob", "load", "seed")
# The headline columns shown by the CLI and plotted (all others are kept in the table too).
HEADLINE_METRICS = (
    "goodput_rps", "goodput_tps", "sla_attainment", "throughput_tps", "ttft_s_p99", "max_tbt_s_p99",
    "e2e_s_p50", "queue_delay_s_mean", "eviction_rate", "kv_util_mean", "dropped", "aborted",
    "attempts_per_request", "evictions_per_request", "wasted_work_fraction", "wasted_gpu_s",
)

Progress = Callable[[int, int, dict], None]  # (points done, points in all, the finished row)
MAX_POINTS = 1_000_000  # runs in one sweep (and loads in one grid): more is a typo, or a job to split


@dataclass(frozen=True)
class Point:
    """One run, as plain picklable data: the resolved scenario plus what the sweep varies."""

    scenario: dict  # the scenario after the user's overrides (LoadedScenario.data_for_other_kinds)
    base_dir: str  # folder the scenario's relative paths were resolved against
    scheduler: str
    load_knob: str | None  # dotted key, or None: run at the scenario's own load
    load: float | int | None
    seed: int
    record_steps: bool = False

    def loaded(self):
        import copy

        from .config import apply_override, scenario_from_dict

        data = copy.deepcopy(self.scenario)
        if self.load_knob is not None:
            apply_override(data, self.load_knob.split("."), self.load, self.load_knob)
        if self.record_steps:
            apply_override(data, ["engine", "record_steps"], True, "record_steps")
        return scenario_from_dict(data, self.base_dir, (), self.scheduler, self.seed)


@dataclass(frozen=True)
class Prepared:
    """A scenario read once on the calling side (errors surface before any point is dispatched)."""

    scenario: dict
    base_dir: str
    name: str
    seed: int
    load_knob: str | None
    own_load: float | int | None  # the scenario's own value of the knob (None: a trace as recorded)

    def point(self, scheduler: str, load, seed: int, record_steps: bool = False) -> Point:
        knob = None if load is None else self.load_knob
        return Point(self.scenario, self.base_dir, scheduler, knob, load, seed, record_steps)


def prepare(scenario_path, overrides: Sequence[str] = ()) -> Prepared:
    from .config import load_scenario

    loaded = load_scenario(scenario_path, list(overrides))
    sc = loaded.scenario
    arrivals = sc.workload.arrivals
    if arrivals.kind == "closed-loop":
        knob, own = CLIENTS_KNOB, arrivals.clients
    elif arrivals.kind in ("poisson", "gamma", "trace"):
        knob, own = RATE_KNOB, arrivals.rate_per_s
    else:
        knob, own = None, None
    return Prepared(loaded.data_for_other_kinds(), str(loaded.base_dir), sc.name, sc.seed, knob, own)


def check_load(prep: Prepared, load: float) -> float | int:
    """A load value valid for the scenario's knob (a whole number of clients for closed loop)."""
    if prep.load_knob is None:
        raise LlmsimError(f"{prep.name}: all-at-once arrivals have no load knob to sweep; use poisson, gamma, trace or closed-loop arrivals")
    if not (isinstance(load, (int, float)) and math.isfinite(load) and load > 0):
        raise LlmsimError(f"load {load!r}: must be a positive number")
    if prep.load_knob == CLIENTS_KNOB:
        if float(load) != round(float(load)):
            raise LlmsimError(f"load {load:g}: closed-loop load is a whole number of clients ({CLIENTS_KNOB})")
        return int(round(float(load)))
    return float(load)


def flatten_summary(summary: dict) -> dict[str, Any]:
    """Nested summary -> flat columns: dicts become `name_stat`, `sla` becomes `sla_<field>`,
    None becomes NaN; the summary's `load` label becomes `arrival_mode`."""
    row: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "load":
            row["arrival_mode"] = value
        elif key == "sla":
            for field, limit in value.items():
                row[f"sla_{field}"] = float(limit)
        elif isinstance(value, dict):
            for stat, v in value.items():  # a list (per replica) as JSON text: one cell, readable in the CSV
                row[f"{key}_{stat}"] = np.nan if v is None else json.dumps(v) if isinstance(v, list) else v
        else:
            row[key] = np.nan if value is None else value
    return row


def run_point(point: Point) -> dict[str, Any]:
    """Simulate one point; return its flat row (a top-level function, so executors can pickle it)."""
    from .cluster.simulation import simulate

    result = simulate(point.loaded())
    row = flatten_summary(result.summary)
    row["kv_capacity_tokens"] = result.derived["kv_capacity_tokens"]
    row["hardware_fidelity"] = result.derived["hardware_fidelity"]
    ids = {"scenario": row.pop("scenario"), "scheduler": point.scheduler, "load_knob": point.load_knob or "",
           "load": np.nan if point.load is None else point.load, "seed": point.seed}
    row.pop("seed", None)
    return {**ids, **row}


def parse_loads(text: str) -> list[float]:
    """`"1,2,4"` (a list) or `"START:STOP:STEP"` (a grid, STOP included when it lies on the grid)."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not (all(map(math.isfinite, parts)) and step > 0 and start <= stop):
                raise LlmsimError(f"--loads {text!r}: need finite START <= STOP and STEP > 0")
            n = math.floor(min((stop - start) / step + 1e-9, 2.0 * MAX_POINTS)) + 1
            if n > MAX_POINTS:
                raise LlmsimError(f"--loads {text!r}: a grid of {n:,} loads; llmsim runs at most {MAX_POINTS:,} points in one sweep")
            loads = [round(start + i * step, 10) for i in range(n)]
        else:
            loads = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise LlmsimError(f"--loads {text!r}: expected a list like 1,2,4 or a grid START:STOP:STEP") from None
    if not loads:
        raise LlmsimError(f"--loads {text!r}: no loads given")
    bad = [x for x in loads if not (math.isfinite(x) and x > 0)]
    if bad:
        raise LlmsimError(f"--loads {text!r}: loads must be positive finite numbers, got {bad[0]:g}")
    return loads


def _run_points(points: list[Point], executor, progress: Progress | None) -> list[dict]:
    owned = not isinstance(executor, Executor)
    ex = make_executor(executor)
    done = [0]

    def on_done(_i: int, row: dict) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(points), row)

    try:
        return ex.map(run_point, points, on_done)
    finally:
        if owned:
            ex.close()


def run_sweep(scenario_path, schedulers: Sequence[str], loads: Sequence[float], seeds: int = 1,
              executor: "str | Executor" = "local", overrides: Sequence[str] = (), progress: Progress | None = None) -> pd.DataFrame:
    """One row per scheduler x load x seed, in that order (seeds: scenario seed + 0..seeds-1)."""
    from .schedulers import SCHEDULERS

    if seeds < 1:
        raise LlmsimError(f"seeds must be at least 1, got {seeds}")
    if not schedulers:
        raise LlmsimError("no schedulers given")
    for s in schedulers:
        if s not in SCHEDULERS:
            raise LlmsimError(f"unknown scheduler {s!r}; known: {', '.join(SCHEDULERS)}")
    if len(schedulers) * len(loads) * seeds > MAX_POINTS:
        raise LlmsimError(f"{len(schedulers)} schedulers x {len(loads):,} loads x {seeds:,} seeds is more than "
                          f"{MAX_POINTS:,} runs in one sweep; split it")
    prep = prepare(scenario_path, overrides)
    values = [check_load(prep, x) for x in loads]
    for x in dict.fromkeys(values):  # every load checked here (e.g. one so low the run spans ages), not in a worker
        prep.point(schedulers[0], x, prep.seed).loaded()
    points = [prep.point(s, x, prep.seed + i) for s in schedulers for x in values for i in range(seeds)]
    return _frame(_run_points(points, executor, progress))


def parse_vary(texts: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`["cluster.router=a,b", "engine.prefix_caching=false,true"]` -> [(key, values), ...]."""
    out: list[tuple[str, list[str]]] = []
    for text in texts:
        key, sep, values = str(text).partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise LlmsimError(f"--vary {text!r}: expected dotted.key=VALUE1,VALUE2 (e.g. cluster.router=round-robin,prefix-affinity)")
        if any(key.strip() == k for k, _ in out):
            raise LlmsimError(f"--vary {key.strip()}: given twice; list all its values in one --vary")
        out.append((key.strip(), vals))
    return out


def compare_plan(scenario_path, schedulers: Sequence[str] | None = None, overrides: Sequence[str] = (),
                 vary: Sequence[tuple[str, Sequence[str]]] = ()) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The schedulers and variants a comparison runs: those given, else the scenario's own
    `compare` section, else every scheduler and no variant."""
    own = prepare(scenario_path, overrides).scenario.get("compare") or {} if not (schedulers and vary) else {}
    kinds = list(schedulers or own.get("schedulers") or COMPARE_SCHEDULERS)
    if not vary:  # YAML values as --set text (json: false, not Python's False)
        vary = [(k, [v if isinstance(v, str) else json.dumps(v) for v in values]) for k, values in (own.get("vary") or {}).items()]
    return kinds, [(k, list(v)) for k, v in vary]


def compare_schedulers(scenario_path, schedulers: Sequence[str] | None = None, overrides: Sequence[str] = (),
                       executor: "str | Executor" = "local", progress: Progress | None = None,
                       vary: Sequence[tuple[str, Sequence[str]]] = ()) -> pd.DataFrame:
    """One row per scheduler (default: aggressive, conservative, past-future, oracle) x variant, each
    at the scenario's own load and seed: the same request stream for all of them. `vary` lists
    (dotted key, values): every combination of them is a variant, applied as `--set` overrides
    after `overrides`, and named in the `variant` column (`router=a, prefix_caching=true`).
    Schedulers and variants not given come from the scenario's `compare` section (`compare_plan`)."""
    schedulers, vary = compare_plan(scenario_path, schedulers, overrides, vary)
    from .schedulers import SCHEDULERS

    for s in schedulers:
        if s not in SCHEDULERS:
            raise LlmsimError(f"unknown scheduler {s!r}; known: {', '.join(SCHEDULERS)}")
    keys = [k for k, _ in vary]
    points, names, prep = [], [], None
    for combo in itertools.product(*(values for _, values in vary)):
        # every variant is read and checked here, before any run is dispatched
        prep = prepare(scenario_path, [*overrides, *(f"{k}={v}" for k, v in zip(keys, combo))])
        name = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, combo))
        points += [prep.point(s, None, prep.seed) for s in schedulers]
        names += [name] * len(schedulers)
    df = _frame(_run_points(points, executor, progress))
    if vary:
        df.insert(2, "variant", names)
    if prep.own_load is not None:
        df["load_knob"], df["load"] = prep.load_knob, prep.own_load
    return df


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    front = [c for c in ID_COLUMNS if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def write_sweep(df: pd.DataFrame, out_dir, plots: bool = True) -> list[Path]:
    """`sweep.parquet`, `sweep.csv` and (plots=True) the figures of `llmsim.plots.plot_sweep`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        df.to_parquet(out / "sweep.parquet", index=False)
    except ImportError:
        raise LlmsimError("writing Parquet needs pyarrow: pip install pyarrow") from None
    df.to_csv(out / "sweep.csv", index=False)
    paths = [out / "sweep.parquet", out / "sweep.csv"]
    if plots:
        from .plots import plot_sweep

        paths += plot_sweep(df, out)
    return paths


def read_sweep(path) -> pd.DataFrame:
    """A sweep table from `sweep.parquet`/`sweep.csv` or the folder holding them."""
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.parquet" if (p / "sweep.parquet").exists() else p / "sweep.csv"
    if not p.exists():
        raise LlmsimError(f"{path}: no sweep.parquet or sweep.csv")
    from .results_tables import SWEEP_COLUMNS, SWEEP_NUMERIC, read_table

    return read_table(p, SWEEP_COLUMNS, SWEEP_NUMERIC)


# ------------------------------------------------------------------------- intervals over seeds
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(dof: int) -> float:
    """Student's t 97.5 % quantile (two-sided 95 %): a table to 30 degrees of freedom, then the
    Cornish-Fisher expansion (error below 1e-4)."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_ci95(values) -> tuple[float, float, float]:
    """(mean, low, high): the t-based 95 % interval of the mean; low = high = mean for one value."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (math.nan, math.nan, math.nan)
    m = float(v.mean())
    if len(v) == 1:
        return (m, m, m)
    half = t_quantile_975(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return (m, m - half, m + half)


def aggregate(df: pd.DataFrame, metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """Per scheduler and load: `<metric>` (mean over seeds), `<metric>_lo`, `<metric>_hi` (95 %)."""
    rows = []
    for (sched, load), g in df.groupby(["scheduler", "load"], sort=False, dropna=False):
        row = {"scheduler": sched, "load": load, "seeds": len(g)}
        for m in metrics:
            if m in g.columns:
                row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean_ci95(g[m].to_numpy(dtype=float))
        rows.append(row)
    return pd.DataFrame(rows)
