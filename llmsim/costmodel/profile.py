"""Hardware profiles: model-agnostic data about one GPU, with provenance.

A profile is a YAML file (schema in COSTMODEL.md section 2) validated into `HardwareProfile`.
Units are in the field names: GiB for memory, TFLOP/s and GB/s (1e9 bytes/s) for spec peaks,
microseconds (`_us`) for latencies and kernel floors, seconds (`_s`) for engine overheads.
Efficiency factors are dimensionless fractions of the spec peaks.

Schema evolution: measured-table sections (`gemm`, `attention`, `elementwise`, `validation`) are
not defined yet. A later schema adds them as optional fields defaulting to None, so every file
valid today stays valid; `efficiency` stays the fallback for shapes a table does not cover.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmsim.costmodel._yamlio import load_yaml_model, looks_like_path
from llmsim.errors import LlmsimError

# A repository checkout keeps profiles at the top level; an installed wheel carries a copy.
REPO_PROFILES_DIR = Path(__file__).resolve().parents[2] / "hardware_profiles"
PACKAGED_PROFILES_DIR = Path(__file__).resolve().parents[1] / "_data" / "hardware_profiles"

_Fraction = Field(gt=0.0, le=1.0)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HardwareSpec(_Section):
    """Spec-sheet facts about the device."""

    name: str  # canonical profile name, e.g. a100-80g-sxm
    device_name: str  # as torch.cuda.get_device_name() reports it
    memory_gib: float = Field(gt=0)
    sm_count: int = Field(gt=0)
    peak_bf16_tflops: float = Field(gt=0)  # dense (no 2:4 sparsity)
    hbm_gb_per_s: float = Field(gt=0)
    host_link_gb_per_s: float = Field(gt=0)  # host<->device copy rate used to price KV swap
    interconnect_gb_per_s: float = Field(gt=0)  # GPU<->GPU (NVLink), bidirectional total


class Calibration(_Section):
    """How the profile was made."""

    fidelity: Literal["measured", "analytic", "coarse-cpu"]
    date: datetime.date
    source: str
    notes: str = ""
    # Filled by a measured calibration run.
    torch_version: str | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    attention_backends: tuple[str, ...] | None = None
    duration_s: float | None = Field(default=None, ge=0)


class Efficiency(_Section):
    """Achieved fractions of spec peaks used by the analytic model, and the smallest kernel time."""

    gemm_compute: float = _Fraction  # of peak_bf16_tflops, compute-bound GEMMs
    gemm_bandwidth: float = _Fraction  # of hbm_gb_per_s, memory-bound GEMMs (weight streaming)
    attention_prefill_compute: float = _Fraction  # of peak_bf16_tflops, flash attention forward
    attention_decode_bandwidth: float = _Fraction  # of hbm_gb_per_s, paged decode attention
    elementwise_bandwidth: float = _Fraction  # of hbm_gb_per_s, norms / rotary / activation
    kernel_floor_us: float = Field(ge=0)  # no kernel is faster than this


class Comm(_Section):
    """Tensor-parallel all-reduce: time = latency + 2 (tp - 1) / tp x bytes / bus bandwidth."""

    allreduce_latency_us: float = Field(ge=0)
    allreduce_bus_gb_per_s: float = Field(gt=0)
    measured: bool = False  # False: documented defaults, not measured on this machine
    notes: str = ""


class Overheads(_Section):
    """Engine time outside GPU kernels: scheduling, launch gaps, sampling, detokenisation."""

    step_s: float = Field(ge=0)
    per_seq_s: float = Field(ge=0)


class HardwareProfile(_Section):
    """One GPU: spec, provenance, analytic efficiency factors, communication and overheads."""

    schema_version: Literal[1] = 1
    hardware: HardwareSpec
    calibration: Calibration
    efficiency: Efficiency
    comm: Comm
    overheads: Overheads


def _profile_dirs(search_dirs: Sequence[Path]) -> list[Path]:
    return [Path(d) for d in search_dirs] + [REPO_PROFILES_DIR, PACKAGED_PROFILES_DIR]


def list_profiles(search_dirs: Sequence[Path] = ()) -> list[str]:
    """Profile names found in `search_dirs`, the repository and the packaged copy, sorted."""
    names: set[str] = set()
    for directory in _profile_dirs(search_dirs):
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def load_profile(name_or_path: str | Path, search_dirs: Sequence[Path] = ()) -> HardwareProfile:
    """A profile by path to a YAML file, or by name looked up as `<dir>/<name>.yaml`.

    Names are searched in `search_dirs` in order, then the repository's `hardware_profiles/`,
    then the copy packaged in the wheel (`llmsim/_data/hardware_profiles`).
    """
    if looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise LlmsimError(f"hardware profile file {path} does not exist")
        return load_yaml_model(HardwareProfile, path, "hardware profile")
    name = str(name_or_path)
    for directory in _profile_dirs(search_dirs):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return load_yaml_model(HardwareProfile, path, "hardware profile")
    known = list_profiles(search_dirs)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise LlmsimError(
        f"unknown hardware profile '{name}'{hint}; known profiles: {', '.join(known) or 'none'} "
        "(or give a path to a YAML file)"
    )
