"""Capacity search: the largest load a scheduler sustains under the scenario's SLA.

`find_capacity(scenario, scheduler, target_attainment=0.9, seeds=3)` searches the scenario's load
knob (`llmsim.sweep`: arrival rate in requests/s for open loop, a whole number of clients for
closed loop) once per seed (seed = scenario seed + i), the seeds' searches running side by side on
the executor:

1. Bracket: probe the start load (default: the scenario's own), then multiply it by `growth`
   while the probe is sustainable (or divide while it is not) until one sustainable and one
   unsustainable load enclose the knee.
2. Bisect the bracket until it is narrower than `rel_tol` of its upper end (closed loop: until
   the two client counts are adjacent).

Every probe is a full run judged on its requests after warm-up: the first `warmup_fraction` of
requests by arrival are dropped (the run starts with an empty queue). A probe's verdict:
- `overloaded`: SLA attainment of the measured requests is below the target;
- `backlogged`: attainment meets the target but the queue grows through the run: the mean
  queueing delay of the last third of the measured requests exceeds `backlog_ratio` times that of
  the first third plus `backlog_slack_s` (default: the smaller of the median time in service,
  E2E minus queueing delay, and 10 % of the SLA's TTFT limit, else of its E2E limit); a longer
  run would miss the SLA;
- `stable`: neither; only stable loads are sustainable.

Each seed's knee is the middle of its final bracket (closed loop: its largest sustainable client
count). The result reports them, their mean, and a 95 % interval: mean +- t(0.975, seeds - 1) x
standard error over seeds, widened by the search resolution (the mean half-width of the final
brackets), clipped at zero. With one seed there is no interval (NaN). Loads are in the knob's
unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import LlmsimError
from .executors import Executor, make_executor
from .sweep import CLIENTS_KNOB, Point, check_load, mean_ci95, prepare

VERDICTS = ("stable", "backlogged", "overloaded")
MAX_BRACKET_STEPS = 12  # growth 2: loads from start / 4096 to start x 4096


@dataclass(frozen=True)
class Probe:
    point: Point
    target_attainment: float
    warmup_fraction: float
    backlog_ratio: float
    backlog_slack_s: float | None


def judge(requests: pd.DataFrame, sla: dict, target_attainment: float, warmup_fraction: float = 0.1,
          backlog_ratio: float = 2.0, backlog_slack_s: float | None = None) -> dict[str, Any]:
    """Attainment after warm-up, queue growth (first vs last third) and the verdict of one run."""
    df = requests.sort_values(["arrival_s", "request_id"], kind="stable")
    measured = df.iloc[int(math.floor(warmup_fraction * len(df))):]
    if len(measured) < 3:
        raise LlmsimError(f"capacity: only {len(measured)} requests left after warm-up; raise workload.num_requests")
    attainment = float(measured["good"].mean())
    # Time spent waiting before the first admission; a request never admitted (dropped by the SLA
    # guard, or unfinished) waited until it ended.
    wait = measured["queue_delay_s"].to_numpy(dtype=float, copy=True)
    never = np.isnan(wait)
    wait[never] = (measured["end_s"].to_numpy(dtype=float) - measured["arrival_s"].to_numpy(dtype=float))[never]
    wait = np.nan_to_num(wait, nan=np.inf)
    third = len(wait) // 3
    first, last = float(np.mean(wait[:third])), float(np.mean(wait[-third:]))
    if backlog_slack_s is None:
        service = (measured["e2e_s"] - measured["queue_delay_s"]).dropna()
        scales = [float(service.median())] if len(service) else []
        limit = sla.get("ttft_s") or sla.get("e2e_s")
        scales += [0.1 * limit] if limit else []
        backlog_slack_s = min(scales) if scales else 0.0
    backlogged = last > backlog_ratio * first + backlog_slack_s
    verdict = "overloaded" if attainment < target_attainment else "backlogged" if backlogged else "stable"
    return {"attainment": attainment, "measured_requests": len(measured), "queue_delay_first_third_s": first,
            "queue_delay_last_third_s": last, "backlog_slack_s": backlog_slack_s, "verdict": verdict}


def run_probe(probe: Probe) -> dict[str, Any]:
    """Simulate one probe and judge it (a top-level function, so executors can pickle it)."""
    from .cluster.simulation import simulate

    p = probe.point
    result = simulate(p.loaded())
    s = result.summary
    row = {"seed": p.seed, "load": p.load}
    row.update(judge(result.requests, s["sla"], probe.target_attainment, probe.warmup_fraction,
                     probe.backlog_ratio, probe.backlog_slack_s))
    row.update({"attainment_all": s["sla_attainment"], "goodput_rps": s["goodput_rps"], "goodput_tps": s["goodput_tps"],
                "ttft_s_p99": s["ttft_s"]["p99"], "max_tbt_s_p99": s["max_tbt_s"]["p99"], "eviction_rate": s["eviction_rate"]})
    return {k: (np.nan if v is None else v) for k, v in row.items()}


@dataclass
class _Search:
    """One seed's bracket-and-bisect state."""

    seed: int
    integer: bool
    start: float
    growth: float
    rel_tol: float
    lo: float | None = None  # largest sustainable load seen
    hi: float | None = None  # smallest unsustainable load seen
    steps_up: int = 0
    steps_down: int = 0
    note: str | None = None

    def next_load(self):
        if self.note is not None:
            return None
        if self.lo is None and self.hi is None:
            return self.start
        if self.hi is None:
            if self.steps_up >= MAX_BRACKET_STEPS:
                self.note = f"seed {self.seed}: still sustainable at {self.lo:g}; the knee is higher"
                return None
            self.steps_up += 1
            return max(self.lo + 1, round(self.lo * self.growth)) if self.integer else self.lo * self.growth
        if self.lo is None:
            if self.integer and self.hi <= 1:
                self.note = f"seed {self.seed}: not sustainable even with one client"
                return None
            if self.steps_down >= MAX_BRACKET_STEPS:
                self.note = f"seed {self.seed}: not sustainable even at {self.hi:g}; the knee is lower"
                return None
            self.steps_down += 1
            return max(1, min(self.hi - 1, round(self.hi / self.growth))) if self.integer else self.hi / self.growth
        if self.integer:
            return None if self.hi - self.lo <= 1 else (self.lo + self.hi) // 2
        return None if self.hi - self.lo <= self.rel_tol * self.hi else (self.lo + self.hi) / 2

    def update(self, load, sustainable: bool) -> None:
        if sustainable:
            self.lo = load if self.lo is None else max(self.lo, load)
        else:
            self.hi = load if self.hi is None else min(self.hi, load)

    @property
    def knee(self) -> float:
        if self.lo is None:
            return 0.0 if self.integer and self.hi is not None and self.hi <= 1 else math.nan
        if self.hi is None:
            return math.nan
        return float(self.lo) if self.integer else (self.lo + self.hi) / 2


@dataclass
class CapacityResult:
    scenario: str
    scheduler: str
    load_knob: str
    target_attainment: float
    warmup_fraction: float
    seeds: list[int]
    knee_per_seed: list[float]  # NaN where a seed's search could not bracket the knee (see notes)
    bracket_per_seed: list[tuple[float | None, float | None]]  # (largest sustainable, smallest not)
    knee_mean: float
    knee_ci95: tuple[float, float]  # NaN with one seed
    probes: pd.DataFrame  # one row per probe: seed, load, attainment, verdict, queue growth, ...
    notes: list[str] = field(default_factory=list)

    @property
    def load_unit(self) -> str:
        return "clients" if self.load_knob == CLIENTS_KNOB else "req/s"

    def summary(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "scheduler": self.scheduler, "load_knob": self.load_knob,
                "target_attainment": self.target_attainment, "knee_mean": self.knee_mean,
                "knee_ci95_lo": self.knee_ci95[0], "knee_ci95_hi": self.knee_ci95[1],
                "knee_per_seed": list(self.knee_per_seed), "seeds": list(self.seeds), "probes": len(self.probes)}


def find_capacity(scenario_path, scheduler: str, target_attainment: float = 0.9, seeds: int = 3,
                  overrides: Sequence[str] = (), executor: "str | Executor" = "local", warmup_fraction: float = 0.1,
                  start_load: float | None = None, growth: float = 2.0, rel_tol: float = 0.02,
                  backlog_ratio: float = 2.0, backlog_slack_s: float | None = None,
                  progress: Callable[[int, dict], None] | None = None) -> CapacityResult:
    """Maximum sustainable load of `scheduler` under the scenario's SLA (see the module docstring);
    `progress(probes_done, probe_row)` is called after each probe."""
    _check_arguments(scheduler, target_attainment, warmup_fraction, seeds, growth, rel_tol)
    prep = prepare(scenario_path, overrides)
    start = _start_load(prep, start_load)
    probe0 = Probe(prep.point(scheduler, start, prep.seed), target_attainment, warmup_fraction, backlog_ratio, backlog_slack_s)
    probe0.point.loaded()  # validate here, once
    integer = prep.load_knob == CLIENTS_KNOB
    searches = [_Search(prep.seed + i, integer, start, growth, rel_tol) for i in range(seeds)]

    def make_probe(search: _Search, load: float) -> Probe:
        return Probe(prep.point(scheduler, check_load(prep, load), search.seed), target_attainment, warmup_fraction,
                     backlog_ratio, backlog_slack_s)

    rows = _run_searches(searches, make_probe, executor, progress)
    probes_df = pd.DataFrame(rows).sort_values(["seed", "load"], kind="stable").reset_index(drop=True)
    knees = [s.knee for s in searches]
    mean, ci = _knee_mean_ci95(searches, knees)
    notes = [s.note for s in searches if s.note]
    return CapacityResult(prep.name, scheduler, prep.load_knob, target_attainment, warmup_fraction,
                          [s.seed for s in searches], knees, [(s.lo, s.hi) for s in searches], mean, ci, probes_df, notes)


def _check_arguments(scheduler: str, target_attainment: float, warmup_fraction: float, seeds: int, growth: float,
                     rel_tol: float) -> None:
    """Raise LlmsimError for an unknown scheduler or a search argument out of range."""
    from .schedulers import SCHEDULERS

    if scheduler not in SCHEDULERS:
        raise LlmsimError(f"unknown scheduler {scheduler!r}; known: {', '.join(SCHEDULERS)}")
    if not 0.0 < target_attainment <= 1.0:
        raise LlmsimError(f"target attainment (--target-attainment) must be in (0, 1], got {target_attainment}")
    if not 0.0 <= warmup_fraction < 0.9:
        raise LlmsimError(f"warmup_fraction (--warmup-fraction) must be in [0, 0.9), got {warmup_fraction}")
    if seeds < 1:
        raise LlmsimError(f"capacity: seeds must be at least 1, got {seeds}")
    if not (math.isfinite(growth) and growth > 1.0):
        raise LlmsimError(f"capacity: growth must be a finite number above 1, got {growth}")
    if not (math.isfinite(rel_tol) and 0.0 < rel_tol < 1.0):
        raise LlmsimError(f"capacity: rel_tol (--rel-tol) must be in (0, 1), got {rel_tol}")


def _start_load(prep, start_load: float | None) -> float:
    """The searches' first load (the knob's unit): `start_load`, else the scenario's own, else the
    trace's mean arrival rate, checked. Raises LlmsimError where the scenario has no load knob or
    sets no SLA."""
    if prep.load_knob is None:
        check_load(prep, 1.0)  # raises: no load knob
    if not prep.scenario.get("sla") or not any(v is not None for v in prep.scenario["sla"].values()):
        raise LlmsimError(f"{prep.name}: the scenario sets no SLA (sla.ttft_s, tpot_s, max_tbt_s, e2e_s); capacity is measured against it")
    start = start_load if start_load is not None else prep.own_load
    if start is None:
        start = _trace_mean_rate(prep)
    return check_load(prep, start)


def _run_searches(searches: list[_Search], make_probe: Callable[[_Search, float], Probe], executor: str | Executor,
                  progress: Callable[[int, dict], None] | None) -> list[dict]:
    """Run the seeds' searches side by side until none has a load left to probe: each round probes
    every search's next load (`make_probe(search, load)`) on the executor and updates the search with
    its verdict. Returns the probe rows in the order they finished."""
    rows: list[dict] = []
    owned = not isinstance(executor, Executor)
    ex = make_executor(executor)
    try:
        while True:
            todo = [(s, s.next_load()) for s in searches]
            todo = [(s, x) for s, x in todo if x is not None]
            if not todo:
                break
            probes = [make_probe(s, x) for s, x in todo]

            def on_done(_i: int, row: dict) -> None:
                rows.append(row)
                if progress is not None:
                    progress(len(rows), row)

            results = ex.map(run_probe, probes, on_done)
            for (s, _), probe, row in zip(todo, probes, results):
                s.update(probe.point.load, row["verdict"] == "stable")
    finally:
        if owned:
            ex.close()
    return rows


def _knee_mean_ci95(searches: list[_Search], knees: list[float]) -> tuple[float, tuple[float, float]]:
    """The mean of the finite knees and its 95 % interval widened by the search resolution (the mean
    half-width of the final brackets), clipped at zero; NaN where fewer than two knees are finite."""
    finite = [k for k in knees if not math.isnan(k)]
    mean, lo, hi = mean_ci95(finite) if finite else (math.nan,) * 3
    if len(finite) >= 2:
        resolution = float(np.mean([(s.hi - s.lo) / 2 for s in searches if s.lo is not None and s.hi is not None]))
        ci = (max(0.0, lo - resolution), hi + resolution)  # a load is positive
    else:
        ci = (math.nan, math.nan)
    return mean, ci


def _trace_mean_rate(prep) -> float:
    from .config import scenario_from_dict
    from .workload import build_workload
    from .workload.arrivals import mean_rate_per_s

    sc = scenario_from_dict(prep.scenario, prep.base_dir).scenario
    return float(mean_rate_per_s(build_workload(sc.workload, sc.seed).arrival_s))


# ------------------------------------------------------------------------- M/D/1 closed form
def md1_wait_cdf(t_s: float, rate_per_s: float, service_s: float) -> float:
    """P(Wq <= t) for the M/D/1 queue (FIFO, arrival rate lambda, deterministic service D, rho < 1),
    Erlang's formula: (1 - rho) sum_{k=0}^{floor(t/D)} [lambda (kD - t)]^k / k! exp(-lambda (kD - t)).
    The terms alternate in sign and grow like exp(2 lambda t), so the sum is taken in decimal
    arithmetic with enough digits for full double precision at any t."""
    import decimal

    rho = rate_per_s * service_s
    if t_s < 0 or rho >= 1.0:
        return 0.0
    ctx = decimal.Context(prec=40 + int(2 * rate_per_s * t_s / math.log(10)))
    lam, d, t = (decimal.Decimal(repr(float(v))) for v in (rate_per_s, service_s, t_s))
    total, fact = decimal.Decimal(0), decimal.Decimal(1)
    for k in range(int(math.floor(t_s / service_s + 1e-12)) + 1):
        if k:
            fact = ctx.multiply(fact, k)
        x = ctx.multiply(lam, ctx.subtract(ctx.multiply(k, d), t))  # <= 0
        power = ctx.power(x, k) if k else decimal.Decimal(1)  # decimal refuses 0 ** 0
        total = ctx.add(total, ctx.divide(ctx.multiply(power, ctx.exp(-x)), fact))
    return min(1.0, max(0.0, (1.0 - rho) * float(total)))


def md1_knee_rate(wait_limit_s: float, service_s: float, target: float) -> float:
    """The arrival rate at which P(Wq <= wait_limit_s) equals `target` (bisection on rho)."""
    lo, hi = 1e-9, (1.0 - 1e-9) / service_s
    for _ in range(200):
        mid = (lo + hi) / 2
        if md1_wait_cdf(wait_limit_s, mid, service_s) >= target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


__all__ = ["find_capacity", "CapacityResult", "judge", "run_probe", "md1_wait_cdf", "md1_knee_rate", "VERDICTS"]
