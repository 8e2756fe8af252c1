"""The scenario file: a strict, frozen pydantic schema and its loader.

`load_scenario(path, overrides)` reads a YAML scenario, applies `--set dotted.key=value` overrides,
and validates it. Every problem becomes one `LlmsimError` line that names the file, the line, and
the dotted key: an unknown or misspelt key (with a suggestion), a missing key, a bad value, a
duplicated key. Relative paths inside a scenario are resolved against the scenario file's folder,
so a scenario runs the same from any working directory; relative paths given in `--set` overrides
are resolved against the working directory, where they were typed. This module holds the schema and
the two entry points; YAML reading and `--set` overrides live in llmsim.config_loading (`parse_override`
and `apply_override` importable from here too), the error text in llmsim.config_errors.
Units are in the key names: `_s` seconds, `_tokens` tokens, `_gib` GiB, `_per_s` per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from .config_base import Strict
from .config_errors import format_errors
from . import config_per_scheduler as per_scheduler
from .config_loading import apply_override, parse_override, read_yaml, resolve_paths
from .config_workload import Arrivals, Lengths, ThinkTime, Turns, WorkloadConfig  # noqa: F401 (part of the schema users import)
from .errors import LlmsimError, did_you_mean
from .feasibility import check_feasible
from .registry import ROUTERS
from .schedulers import SCHEDULERS


# ------------------------------------------------------------------------------------ cluster
class CacheAwareRouterConfig(Strict):
    """Weights of the `cache-aware` router's two scores (llmsim.cluster.cache_router). Defaults:
    the llm-d default profile's prefix-cache and queue scorer weights (3 and 2)."""

    hit_weight: float = Field(3.0, ge=0.0)  # times cached blocks / prompt blocks
    load_weight: float = Field(2.0, ge=0.0)  # times 1 - load / largest load


class ClusterConfig(Strict):
    replicas: int = Field(1, ge=1)
    tensor_parallel: int = Field(1, ge=1)
    router: str = "round-robin"
    cache_aware: CacheAwareRouterConfig = Field(default_factory=CacheAwareRouterConfig)

    @field_validator("router")
    @classmethod
    def _known_router(cls, v: str) -> str:
        return _check_kind(v, ROUTERS, "router")


class SLAGuardConfig(Strict):
    """Server-side SLA guard (docs/schedulers.md §3). The paper's artifact servers dropped requests that
    waited more than 8 s and aborted requests whose token gap exceeded 1.49 s. Off by default."""

    max_queue_s: float | None = Field(None, gt=0.0)  # drop a request not admitted within this
    max_tbt_s: float | None = Field(None, gt=0.0)  # abort a request whose token gap exceeds this
    # When the queue limit is checked: before every step, or only when an admission round is due
    # (the artifact's server checked its queue in its router's admission loop).
    check_queue_at: Literal["every-step", "admission-rounds"] = "every-step"
    # Whether a request evicted and waiting for its re-prefill can be aborted for its token gap
    # (true), or only once it runs again, after its re-prefill (false: the artifact's server).
    abort_waiting: bool = True


class EngineConfig(Strict):
    mode: Literal["separate", "mixed"] = "separate"
    block_size: int = Field(16, ge=1)  # vLLM default
    max_num_seqs: int = Field(256, ge=1)  # vLLM default
    max_batched_tokens: int = Field(8192, ge=1)
    max_model_len: int | None = Field(None, ge=1)  # None: the model's max_position_embeddings
    kv_capacity_tokens: int | None = Field(None, ge=1)  # None: derived from GPU memory (below)
    gpu_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)  # vLLM default
    activation_reserve_gib: float = Field(2.0, ge=0.0)  # per GPU, for activations and CUDA graphs
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space_gib: float = Field(4.0, ge=0.0)  # per GPU, vLLM's --swap-space default
    victim: Literal["newest", "latest-arrival", "largest-remaining-cap", "longest-context"] = "newest"
    record_steps: bool = False  # keep a per-step time series (KV use, batch, queue)
    fast_forward: bool = True  # advance runs of decode steps in one timeout; false: step by step (same results)
    # Keep full prompt blocks cached after use and share them between requests (vLLM's automatic
    # prefix caching, llmsim.prefix_cache). Needs a workload with block hash ids (Mooncake).
    prefix_caching: bool = False
    # Restart the count of decode steps to the next admission round after an eviction (LightLLM's
    # router, as in the paper's artifact); false: evictions do not move the next round.
    reset_round_counter_on_eviction: bool = False
    sla_guard: "SLAGuardConfig" = Field(default_factory=lambda: SLAGuardConfig())


# ------------------------------------------------------------------------------------ cost model
class AnalyticCostConfig(Strict):
    kind: Literal["analytic"] = "analytic"
    overhead_preset: Literal["cuda-graph", "eager", "kernels-only"] | None = None  # None: the profile's (costmodel/overheads.py)
    step_overhead_s: float | None = Field(None, ge=0.0)  # None: the preset's or the profile's value
    per_seq_overhead_s: float | None = Field(None, ge=0.0)
    sampling_bytes_per_logit: float | None = Field(None, ge=0.0)


class ConstantCostConfig(Strict):
    kind: Literal["constant"]
    step_time_s: float = Field(gt=0.0)
    per_token_s: float = Field(0.0, ge=0.0)


CostModelConfig = Annotated[Union[AnalyticCostConfig, ConstantCostConfig], Field(discriminator="kind")]


# ------------------------------------------------------------------------------------ workload
# (config_workload.py)


class SLAConfig(Strict):
    """Per-request thresholds; unset ones are not checked. Paper (7B/13B, one GPU): ttft 10, max_tbt 1.5."""

    ttft_s: float | None = Field(None, gt=0.0)
    tpot_s: float | None = Field(None, gt=0.0)
    max_tbt_s: float | None = Field(None, gt=0.0)
    e2e_s: float | None = Field(None, gt=0.0)


# ------------------------------------------------------------------------------------ scheduler
def _check_kind(value: str, registry, what: str) -> str:
    if value not in registry:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(registry)}{did_you_mean(value, registry)}")
    return value


def _scheduler_section() -> type[BaseModel]:
    """`scheduler: {kind: ..., <kind>: {knobs}}`: knobs of every kind may sit side by side, so the
    kind can be switched (`--scheduler`) without editing the knobs. Built from the registry, so a
    new scheduler needs no edit here."""
    fields: dict[str, Any] = {"kind": (str, "past-future")}
    for kind, spec in SCHEDULERS.items():
        fields[kind.replace("-", "_")] = (spec.config_cls, Field(default_factory=spec.config_cls, alias=kind))
    validators = {"_known_kind": field_validator("kind")(lambda v: _check_kind(v, SCHEDULERS, "scheduler"))}
    return create_model(
        "SchedulerSection",
        __config__=ConfigDict(extra="forbid", frozen=True, populate_by_name=True),
        __validators__=validators,
        **fields,
    )


SchedulerSection = _scheduler_section()


def scheduler_config(section: BaseModel, kind: str | None = None):
    """The knobs of `kind` (default: the section's own kind)."""
    return getattr(section, (kind or section.kind).replace("-", "_"))


# ------------------------------------------------------------------------------------ scenario
class CompareConfig(Strict):
    """What `llmsim compare` runs when its command line names none (`--schedulers`, `--vary`):
    a scenario can carry the comparison it was written for (docs/sweeps.md). `llmsim run` ignores it."""

    schedulers: list[str] | None = None  # default: aggressive, conservative, past-future, oracle
    vary: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # dotted key -> values; every combination runs

    @field_validator("schedulers")
    @classmethod
    def _known(cls, kinds):
        for kind in kinds or ():
            if kind not in SCHEDULERS:
                raise ValueError(f"unknown scheduler {kind!r}; known: {', '.join(SCHEDULERS)}")
        return kinds


class Scenario(Strict):
    name: str = "scenario"
    description: str = ""
    seed: int = Field(0, ge=0)  # numpy seeds are non-negative
    model: str  # a catalog name (llmsim list models) or a path to a model YAML
    hardware: str  # a profile name (llmsim list hardware) or a path to a profile YAML
    cluster: ClusterConfig = ClusterConfig()
    engine: EngineConfig = EngineConfig()
    cost_model: CostModelConfig = AnalyticCostConfig()
    scheduler: SchedulerSection = SchedulerSection()  # type: ignore[valid-type]
    workload: WorkloadConfig
    sla: SLAConfig = SLAConfig()
    compare: CompareConfig = CompareConfig()

    def resolved_dict(self) -> dict:
        """Plain data of the whole scenario, defaults included, YAML keys as written."""
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    path: Path | None  # None when built in code
    base_dir: Path  # relative paths in the scenario were resolved against this folder
    unmerged: dict | None = None  # the data before a per_scheduler entry was merged in (None: no section)

    def data_for_other_kinds(self) -> dict:
        """Data to build a run of any scheduler kind from (sweep, compare; config_per_scheduler.py)."""
        return self.unmerged if self.unmerged is not None else self.scenario.resolved_dict()


# ------------------------------------------------------------------------------------ loading
# Reading the YAML and applying overrides: llmsim.config_loading; the error text: llmsim.config_errors.
_UNIONS = (Lengths, Arrivals, Turns, ThinkTime, CostModelConfig)  # discriminated unions: their `kind` tags are not keys


def load_scenario(path: str | Path, overrides: list[str] = (), scheduler: str | None = None, seed: int | None = None) -> LoadedScenario:
    """Read, override and validate a scenario file."""
    path = Path(path)
    data, node = read_yaml(path)
    return _validate(data, node, path, path.resolve().parent, overrides, scheduler, seed)


def scenario_from_dict(data: dict, base_dir: str | Path = ".", overrides: list[str] = (), scheduler: str | None = None, seed: int | None = None) -> LoadedScenario:
    """Validate a scenario given as a Python dict (notebooks, tests)."""
    import copy

    return _validate(copy.deepcopy(data), None, None, Path(base_dir).resolve(), overrides, scheduler, seed)


def _validate(data, node, path, base_dir, overrides, scheduler, seed) -> LoadedScenario:
    # Paths written in the file are relative to its folder; a path given with --set is relative to
    # the working directory, where the user typed it. The second pass sees only the override's
    # paths: every path from the file is absolute by then.
    resolve_paths(data, base_dir)
    from_override: dict[tuple, str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, f"--set {text}")
        from_override[tuple(keys)] = f"--set {text}"
    if scheduler is not None:
        apply_override(data, ["scheduler", "kind"], scheduler, "--scheduler")
        from_override[("scheduler", "kind")] = f"--scheduler {scheduler}"
    if seed is not None:
        data["seed"] = seed
        from_override[("seed",)] = f"--seed {seed}"
    resolve_paths(data, Path.cwd())
    where = str(path) if path is not None else "scenario"
    base, per = per_scheduler.split(data, SCHEDULERS, where) if isinstance(data, dict) else (data, {})
    kind = per_scheduler.running_kind(base, SchedulerSection.model_fields["kind"].default) if per else None
    for other, entry in per.items():  # every entry is checked, whichever kind runs
        if other != kind:
            _model(per_scheduler.merge(base, {**entry, "scheduler": {**(entry.get("scheduler") or {}), "kind": other}}),
                   None, path, {}, f"{per_scheduler.SECTION}.{other}")
    merged = per_scheduler.merge(base, per[kind]) if kind in per else base
    scenario = _model(merged, node if kind not in per else None, path, from_override,
                      f"{per_scheduler.SECTION}.{kind}" if kind in per else None)
    check_feasible(scenario, base_dir)  # memory, simulated time, KV in GPU memory: before any allocation
    return LoadedScenario(scenario, path, base_dir, data if per else None)


def _model(data, node, path, from_override, entry: str | None) -> Scenario:
    """Validate scenario data; errors name `entry` (a per_scheduler entry merged in), if any."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        message = format_errors(e, data, node, path, from_override, Scenario, _UNIONS)
        raise LlmsimError(message if entry is None else f"{message} (with {entry} applied)") from None
