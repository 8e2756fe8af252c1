"""Import Vidur's published per-operator GPU profiles into a schema-2 table profile.

Vidur (https://github.com/microsoft/vidur, MIT licence) ships CUDA kernel times measured on
A100 and H100 GPUs under `data/profiling/`:

- `compute/<gpu>/<hf_id>/mlp.csv`: one row per (token count, TP degree) with the median time of
  every per-layer operator (`time_stats.<op>.median`, milliseconds): the four linear layers
  `attn_pre_proj` (QKV), `attn_post_proj` (O), `mlp_up_proj` (gate and up, merged) and
  `mlp_down_proj`, and the memory-bound kernels `input_layernorm`, `post_attention_layernorm`,
  `attn_rope`, `mlp_act` and `add`; columns `n_embd`, `n_head`, `n_kv_head`, `n_expanded_embd`,
  `num_tokens` and `num_tensor_parallel_workers` say which shape was timed.
- `compute/<gpu>/<hf_id>/attention.csv` (Git LFS in Vidur's repository): per (batch, chunk,
  KV length, TP) the median prefill or decode attention time plus the input/output reshapes.
- `network/<gpu>_dgx/all_reduce.csv`: NCCL all-reduce median time per message size in bytes and
  number of GPUs (`devices_per_node` equal to `num_workers`: one node, NVLink).

`vidur_measurements` turns those rows into llmsim's `RawMeasurements` (seconds, per-GPU shapes),
and `import_vidur` fits them with the same code as `llmsim calibrate-hardware` (llmsim.costmodel.fit)
onto a template profile that supplies what Vidur does not measure (spec peaks, efficiency
fallbacks, engine overheads, host link), then marks the profile `fidelity: measured-public` with
its source. Units: Vidur's milliseconds become seconds; sizes are tokens and bytes.
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.fit import fit_profile
from llmsim.costmodel.measurements import (
    AllReducePoint,
    BandwidthPoint,
    DecodeAttentionPoint,
    GemmPoint,
    PrefillAttentionPoint,
    RawMeasurements,
)
from llmsim.costmodel.profile import HardwareProfile
from llmsim.errors import LlmsimError

VIDUR_URL = "https://github.com/microsoft/vidur"
# Vidur's GPU folder name -> (torch device name, llmsim template profile with the same GPU's peaks).
VIDUR_GPUS = {
    "a100": ("NVIDIA A100-SXM4-80GB", "a100-80g-sxm"),
    "h100": ("NVIDIA H100 80GB HBM3", "h100-80g-sxm"),
}
_LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
_MEMORY_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
_DTYPE_BYTES = 2  # Vidur profiles float16 kernels


@dataclass(frozen=True)
class VidurSources:
    """The CSV files of one import; any may be None (that part then comes from the template)."""

    mlp: Path | None = None
    attention: Path | None = None
    all_reduce: Path | None = None

    def describe(self) -> str:
        return ", ".join(f"{p.name} ({p})" for p in (self.mlp, self.attention, self.all_reduce) if p is not None)


def find_sources(paths: Sequence[Path], gpu: str, hf_id: str, network: str | None = None) -> VidurSources:
    """Files named by `paths`: CSV files recognised by name (mlp.csv, attention.csv,
    all_reduce.csv), or folders: Vidur's `data/profiling` layout (a `compute/` subfolder, read at
    compute/<gpu>/<hf_id>/ and network/<network or gpu_dgx>/) or a flat folder of those files."""
    found: dict[str, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            if (path / "compute").is_dir():
                candidates = [path / "compute" / gpu / hf_id / "mlp.csv", path / "compute" / gpu / hf_id / "attention.csv",
                              path / "network" / (network or f"{gpu}_dgx") / "all_reduce.csv"]
            else:
                candidates = [path / name for name in ("mlp.csv", "attention.csv", "all_reduce.csv")]
            for file in candidates:
                if file.is_file():
                    found.setdefault(file.stem, file)
        elif path.is_file():
            if path.stem not in ("mlp", "attention", "all_reduce"):
                raise LlmsimError(f"{path}: expected Vidur's mlp.csv, attention.csv or all_reduce.csv (the file name says which)")
            found[path.stem] = path
        else:
            raise LlmsimError(f"--source {path} does not exist")
    if "mlp" not in found:
        raise LlmsimError(f"no mlp.csv for {gpu} / {hf_id} in {', '.join(map(str, paths))} (Vidur's compute/{gpu}/{hf_id}/mlp.csv)")
    return VidurSources(found.get("mlp"), found.get("attention"), found.get("all_reduce"))


# ----- reading -----


def read_rows(path: Path, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV file, after checking that the `required` columns exist."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise LlmsimError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmsimError(f"cannot read {path}: {exc}") from None


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    text = row.get(column)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LlmsimError(f"{path} line {line}: column {column} is {text!r}, not a number") from None


def _integer(path: Path, line: int, row: dict[str, str], column: str) -> int:
    value = _number(path, line, row, column)
    if value != int(value):
        raise LlmsimError(f"{path} line {line}: column {column} is {value}, not a whole number")
    return int(value)


def _median_s(path: Path, line: int, row: dict[str, str], op: str) -> float:
    """Vidur's median time of `op` in milliseconds, as seconds; it must be positive."""
    ms = _number(path, line, row, f"time_stats.{op}.median")
    if not ms > 0:
        raise LlmsimError(f"{path} line {line}: time_stats.{op}.median is {ms} ms; times must be positive")
    return ms * 1e-3


def _optional_s(path: Path, line: int, row: dict[str, str], op: str) -> float:
    """A reshape time that Vidur adds to attention, as seconds: a missing or empty cell counts as 0."""
    column = f"time_stats.{op}.median"
    return _number(path, line, row, column) * 1e-3 if (row.get(column) or "").strip() else 0.0


def _check_model(model: ModelArch, path: Path, shapes: set[tuple[int, ...]], labels: Sequence[str]) -> None:
    """Vidur's files hold one model each; its shape must be the model's."""
    want = (model.hidden_size, model.num_attention_heads, model.num_key_value_heads, model.intermediate_size)[: len(labels)]
    if want not in shapes:
        have = "; ".join(", ".join(f"{k}={v}" for k, v in zip(labels, s)) for s in sorted(shapes)) or "no rows"
        raise LlmsimError(f"{path}: rows are for {have}, not {model.name} "
                          f"({', '.join(f'{k}={v}' for k, v in zip(labels, want))})")
    if model.head_dim * model.num_attention_heads != model.hidden_size:
        raise LlmsimError(f"{model.name}: head_dim x heads != hidden_size, which Vidur's profiles assume")


def _rows_for_tp(path: Path, rows: list[tuple[int, dict[str, str]]], tp: int, required: bool = True) -> list[tuple[int, dict[str, str]]]:
    chosen = [(line, row) for line, row in rows if _integer(path, line, row, "num_tensor_parallel_workers") == tp]
    if not chosen and required:
        have = sorted({_integer(path, line, row, "num_tensor_parallel_workers") for line, row in rows})
        raise LlmsimError(f"{path}: no rows with num_tensor_parallel_workers={tp} (the file has {', '.join(map(str, have)) or 'none'})")
    return chosen


# ----- conversion -----


def linear_shapes(model: ModelArch, tp: int) -> dict[str, tuple[int, int]]:
    """Per-GPU (n, k) of each of Vidur's linear operators at TP `tp` (as llmsim's cost models shard)."""
    hd, hidden = model.head_dim, model.hidden_size
    q_dim, kv_dim = model.q_heads_per_gpu(tp) * hd, model.kv_heads_per_gpu(tp) * hd
    inter = -(-model.intermediate_size // tp)
    return {"attn_pre_proj": (q_dim + 2 * kv_dim, hidden), "attn_post_proj": (hidden, q_dim),
            "mlp_up_proj": (2 * inter, hidden), "mlp_down_proj": (hidden, inter)}


def memory_op_bytes_per_token(model: ModelArch, tp: int) -> dict[str, int]:
    """Bytes each of Vidur's memory-bound operators reads and writes per token, counted as
    llmsim's cost models count the same kernels (tables.py, analytic.py): a fused residual
    RMSNorm moves 4 x hidden elements, rotary 2 x (q + kv) head elements, SiLU-and-mul 3 x the
    intermediate shard; Vidur's separate residual `add` reads two and writes one hidden vector."""
    hd, hidden, dt = model.head_dim, model.hidden_size, _DTYPE_BYTES
    q_dim, kv_dim = model.q_heads_per_gpu(tp) * hd, model.kv_heads_per_gpu(tp) * hd
    inter = -(-model.intermediate_size // tp)
    return {"input_layernorm": 4 * hidden * dt, "post_attention_layernorm": 4 * hidden * dt,
            "attn_rope": 2 * (q_dim + kv_dim) * dt, "mlp_act": 3 * inter * dt, "add": 3 * hidden * dt}


def mlp_points(path: Path, model: ModelArch, tp: int) -> tuple[list[GemmPoint], list[BandwidthPoint]]:
    """GEMM points of the four linear layers and bandwidth points of the memory-bound kernels."""
    labels = ("n_embd", "n_head", "n_kv_head", "n_expanded_embd")
    columns = [*labels, "num_tokens", "num_tensor_parallel_workers"] + [f"time_stats.{op}.median" for op in _LINEAR_OPS]
    rows = read_rows(path, columns)
    _check_model(model, path, {tuple(_integer(path, ln, r, c) for c in labels) for ln, r in rows}, labels)
    shapes, op_bytes = linear_shapes(model, tp), memory_op_bytes_per_token(model, tp)
    gemm: list[GemmPoint] = []
    memory: list[BandwidthPoint] = []
    for line, row in _rows_for_tp(path, rows, tp):
        tokens = _integer(path, line, row, "num_tokens")
        for op in _LINEAR_OPS:
            n, k = shapes[op]
            gemm.append(GemmPoint(n=n, k=k, tokens=tokens, seconds=_median_s(path, line, row, op)))
        for op in _MEMORY_OPS:
            if (row.get(f"time_stats.{op}.median") or "").strip():  # older Vidur files lack some kernels
                memory.append(BandwidthPoint(num_bytes=float(tokens * op_bytes[op]), seconds=_median_s(path, line, row, op)))
    return gemm, memory


def attention_points(path: Path, model: ModelArch, tp: int) -> tuple[list[PrefillAttentionPoint], list[DecodeAttentionPoint]]:
    """Prefill and decode attention of one layer: Vidur's kernel median plus its input and output
    reshapes (the copies around the kernel that its simulator adds as well)."""
    labels = ("n_embd", "n_q_head", "n_kv_head")
    columns = [*labels, "num_tensor_parallel_workers", "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill"]
    rows = read_rows(path, columns)
    _check_model(model, path, {tuple(_integer(path, ln, r, c) for c in labels) for ln, r in rows}, labels)
    q, kv, hd = model.q_heads_per_gpu(tp), model.kv_heads_per_gpu(tp), model.head_dim
    prefill: list[PrefillAttentionPoint] = []
    decode: list[DecodeAttentionPoint] = []
    # A TP degree without attention rows is allowed: the table model then borrows the closest
    # measured head configuration (tables.closest_attention_config).
    for line, row in _rows_for_tp(path, rows, tp, required=False):
        batch, kv_len = _integer(path, line, row, "batch_size"), _integer(path, line, row, "kv_cache_size")
        reshape_s = _optional_s(path, line, row, "attn_input_reshape") + _optional_s(path, line, row, "attn_output_reshape")
        flag = (row.get("is_prefill") or "").strip().lower()
        if flag not in ("true", "false"):
            raise LlmsimError(f"{path} line {line}: is_prefill is {row.get('is_prefill')!r}, not True or False")
        if flag == "true":
            chunk = _integer(path, line, row, "prefill_chunk_size")
            seconds = _median_s(path, line, row, "attn_prefill") + reshape_s
            prefill.append(PrefillAttentionPoint(q, kv, hd, chunk_tokens=chunk, prefix_tokens=kv_len, batch=batch, seconds=seconds))
        else:
            seconds = _median_s(path, line, row, "attn_decode") + reshape_s
            decode.append(DecodeAttentionPoint(q, kv, hd, batch=batch, context_tokens=kv_len, seconds=seconds))
    return prefill, decode


def allreduce_points(path: Path, tps: Sequence[int]) -> list[AllReducePoint]:
    """Single-node all-reduces (devices_per_node == num_workers) at the TP degrees asked for."""
    rows = read_rows(path, ["num_workers", "devices_per_node", "size", "time_stats.all_reduce.median"])
    points = []
    single_node: set[int] = set()  # TP degrees the file holds, for the error below
    for line, row in rows:
        workers = _integer(path, line, row, "num_workers")
        if _integer(path, line, row, "devices_per_node") == workers:
            single_node.add(workers)
        if workers in tps and workers > 1 and _integer(path, line, row, "devices_per_node") == workers:
            size_bytes = _integer(path, line, row, "size")  # Vidur records the message size in bytes
            points.append(AllReducePoint(tp=workers, num_bytes=float(size_bytes), seconds=_median_s(path, line, row, "all_reduce")))
    absent = [tp for tp in tps if tp > 1 and not any(p.tp == tp for p in points)]
    if absent:
        raise LlmsimError(f"{path}: no single-node all-reduce rows (num_workers = devices_per_node) for TP "
                          f"{', '.join(map(str, absent))}; the file has {', '.join(map(str, sorted(single_node))) or 'none'}")
    return points


def vidur_measurements(sources: VidurSources, model: ModelArch, tps: Sequence[int], gpu: str) -> RawMeasurements:
    """Everything the files hold for `model` at the TP degrees `tps`, as RawMeasurements."""
    if gpu not in VIDUR_GPUS:
        raise LlmsimError(f"--gpu {gpu}: Vidur publishes profiles for {', '.join(VIDUR_GPUS)}")
    raw = RawMeasurements(device="cuda", device_name=VIDUR_GPUS[gpu][0], dtype="float16",
                          timer="Vidur: CUDA kernel time from the torch profiler, median of repeated runs",
                          attention_backends=("vidur FLASH_ATTENTION",) if sources.attention else ())
    for tp in tps:
        model.check_tensor_parallel(tp)
        if sources.mlp is not None:
            gemm, memory = mlp_points(sources.mlp, model, tp)
            raw.gemm += gemm
            raw.elementwise += memory
        if sources.attention is not None:
            prefill, decode = attention_points(sources.attention, model, tp)
            raw.prefill_attention += prefill
            raw.decode_attention += decode
    if sources.attention is not None and not (raw.prefill_attention and raw.decode_attention):
        raise LlmsimError(f"{sources.attention}: needs prefill and decode rows at one of TP {', '.join(map(str, tps))}")
    if sources.all_reduce is not None:
        raw.allreduce = allreduce_points(sources.all_reduce, tps)
    return raw


def import_vidur(sources: VidurSources, model: ModelArch, tps: Sequence[int], gpu: str, base: HardwareProfile,
                 name: str, date: datetime.date) -> HardwareProfile:
    """A `measured-public` schema-2 profile from Vidur's CSVs, on the template `base`."""
    raw = vidur_measurements(sources, model, tps, gpu)
    profile = fit_profile(raw, base, [model], tps, date, name)
    parts = ["GEMMs and memory-bound kernels (mlp.csv)" if sources.mlp else "",
             "attention (attention.csv)" if sources.attention else "",
             "all-reduce (all_reduce.csv)" if sources.all_reduce else ""]
    missing = "attention" if sources.attention is None else ""
    calibration = profile.calibration.model_copy(update={
        "fidelity": "measured-public",
        "source": f"Vidur's published profiles ({VIDUR_URL}, MIT licence), {gpu} / {model.hf_id}, TP {', '.join(map(str, tps))}: "
                  + sources.describe(),
        "notes": f"imported by llmsim import-profile vidur: {'; '.join(p for p in parts if p)}; fitted by llmsim.costmodel.fit. "
                 f"Spec peaks, efficiency fallbacks, engine overheads and host link from the template '{base.hardware.name}'"
                 + (f"; no {missing} table in the sources: the table cost model prices it analytically "
                    "(the template's peaks x efficiency)" if missing else "")
                 + ". Vidur times CUDA kernels alone (float16), without launch gaps between them.",
        "torch_version": None, "cuda_version": None, "driver_version": None, "duration_s": None,
    })
    return HardwareProfile.model_validate(profile.model_dump() | {"calibration": calibration.model_dump()})
