"""Readers of recorded request traces: the shipped raw files under traces/ and llmsim's own format.

Formats (`FORMATS`), detected from the extension and the header / first line by `detect_format`:

- ``azure``: Azure LLM inference trace 2023 CSV, ``TIMESTAMP,ContextTokens,GeneratedTokens``.
  TIMESTAMP is wall-clock text such as ``2023-11-16 18:15:46.6805900`` (7 fractional digits, kept to
  the nanosecond; any ISO 8601 date-time is accepted, a time zone offset is converted to UTC).
- ``mooncake``: Mooncake JSONL, one object a line with ``timestamp`` (milliseconds),
  ``input_length``, ``output_length`` and ``hash_ids`` (one id per 512-token prompt block).
- ``length-table``: CSV of token counts with no timestamps, ``num_prefill_tokens`` (prompt) and
  ``num_decode_tokens`` (output), as traces/sharegpt/ and traces/arxiv/ (same rules as tables.py).
- ``llmsim``: CSV with header ``arrival_s,input_tokens,output_tokens`` or JSONL objects with those
  keys and an optional ``hash_ids`` list; arrival_s in seconds, any origin.

Units: `Trace.arrival_s` is float seconds from the first request (the first is 0.0); token counts
are int64. Rows are put in time order with a *stable* sort: rows that are out of order move, rows
with equal times keep their file order (the shipped files are already sorted). Extra columns or
keys are ignored. Blank lines are not rows. Token counts must be whole numbers >= 1 (no shipped file
has a zero output).

A malformed row raises `LlmsimError` ``<file>:<line>: <what is wrong>`` (lines 1-based, the CSV
header is a line) for the first bad line in the file; with ``on_bad_row='skip'`` every bad row is
skipped, counted in `Trace.skipped_rows`, and the first five messages are kept in
`Trace.skipped_examples`. Nothing is dropped silently. Columns are parsed with vectorised
pandas/numpy calls; Python only walks the rows to split them and to name the bad lines. The
per-format parsers are in llmsim.workload.trace_formats; this module detects the format, puts the
rows in time order, and writes and summarises traces.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import LlmsimError
from .trace_formats import CSV_COLUMNS, JSON_KEYS, JSONL_SUFFIXES, BadRows, open_trace, read_csv, read_jsonl

FORMATS = ("azure", "mooncake", "length-table", "llmsim")


@dataclass
class Trace:
    source: str  # file path
    format: str  # one of FORMATS
    arrival_s: np.ndarray | None  # seconds from the first request (first = 0.0), non-decreasing; None for length tables
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    hash_ids: list[np.ndarray] | None  # per request, int64 ids of its 512-token prompt blocks (Mooncake, llmsim JSONL)
    skipped_rows: int = 0  # rows skipped with on_bad_row='skip'
    skipped_examples: list[str] = field(default_factory=list)  # the first few skip messages (file:line: why)

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def _first_line(path: Path) -> tuple[int, str]:
    """(line number, text) of the first non-blank line."""
    with open_trace(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    return lineno, line
        except UnicodeDecodeError:
            raise LlmsimError(f"{path}: not UTF-8 text, expected a CSV or JSONL trace") from None
    raise LlmsimError(f"{path}: empty file, expected a trace")


def detect_format(path: str | Path) -> str:
    """The trace format of `path`, from its extension and its header (CSV) or first object (JSONL)."""
    path = Path(path)
    lineno, line = _first_line(path)
    suffix = path.suffix.lower()
    is_json = suffix in JSONL_SUFFIXES or (suffix != ".csv" and line.lstrip().startswith("{"))
    if is_json:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LlmsimError(f"{path}:{lineno}: not valid JSON ({e.msg}), cannot tell the trace format") from None
        if isinstance(obj, dict):
            for fmt, keys in JSON_KEYS.items():
                if all(k in obj for k in keys):
                    return fmt
        found = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
        raise LlmsimError(
            f"{path}:{lineno}: unknown trace format (keys: {found}); expected Mooncake keys "
            "timestamp, input_length, output_length or llmsim keys arrival_s, input_tokens, output_tokens"
        )
    header = {h.strip() for h in next(csv.reader([line]), [])}
    for fmt, cols in CSV_COLUMNS.items():
        if all(c in header for c in cols if c is not None):
            return fmt
    raise LlmsimError(
        f"{path}:{lineno}: unknown trace format (header: {line.strip()}); expected TIMESTAMP,ContextTokens,"
        "GeneratedTokens (azure), num_prefill_tokens,num_decode_tokens (length-table) or "
        "arrival_s,input_tokens,output_tokens (llmsim)"
    )


def read_trace(path: str | Path, format: str | None = None, on_bad_row: Literal["error", "skip"] = "error") -> Trace:
    """Read a trace file; `format` defaults to `detect_format(path)`. See the module docstring."""
    path = Path(path)
    if on_bad_row not in ("error", "skip"):
        raise LlmsimError(f"on_bad_row is {on_bad_row!r}, expected 'error' or 'skip'")
    fmt = detect_format(path) if format is None else format
    if fmt not in FORMATS:
        raise LlmsimError(f"{path}: unknown trace format {fmt!r}, expected one of {', '.join(FORMATS)}")
    bad = BadRows(path)
    if fmt == "mooncake" or (fmt == "llmsim" and path.suffix.lower() in JSONL_SUFFIXES):
        times, prompt, output, hashes = read_jsonl(path, fmt, bad)
    else:
        times, prompt, output = read_csv(path, fmt, bad)
        hashes = None
    skipped, examples = bad.settle(on_bad_row)
    if len(prompt) == 0:
        first = f" ({skipped} bad rows skipped; first: {examples[0]})" if skipped else ""
        raise LlmsimError(f"{path}: no requests in the trace{first}")
    arrival = None
    if times is not None:
        order = np.argsort(times, kind="stable")
        times, prompt, output = times[order], prompt[order], output[order]
        if hashes is not None:
            hashes = [hashes[i] for i in order]
        rel = times - times[0]
        arrival = rel / 1e9 if fmt == "azure" else rel / 1e3 if fmt == "mooncake" else rel.astype(np.float64)
    return Trace(str(path), fmt, arrival, prompt, output, hashes, skipped, examples)


# --- writing and statistics -----------------------------------------------------------------------


def write_llmsim_trace(trace: Trace, path: str | Path, arrival_s: np.ndarray | None = None) -> None:
    """Write `trace` in llmsim's own format: CSV (.csv) or JSONL (.jsonl) by extension.

    Columns arrival_s (seconds), input_tokens, output_tokens; JSONL lines also carry hash_ids when
    the trace has them (CSV has no place for them and leaves them out). `arrival_s` overrides the
    trace's times and is required for a length table, which has none. Floats are written with
    repr, so reading the file back gives the same arrays.
    """
    path = Path(path)
    times = trace.arrival_s if arrival_s is None else np.asarray(arrival_s, dtype=np.float64)
    if times is None:
        raise LlmsimError(f"{trace.source}: a length table has no timestamps; pass arrival_s to write it as an llmsim trace")
    if times.shape != (len(trace),):
        raise LlmsimError(f"arrival_s has {times.size} values for a trace of {len(trace)} requests")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise LlmsimError("arrival_s must be finite and non-decreasing")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        body = "".join(f"{float(t)!r},{int(p)},{int(o)}\n" for t, p, o in zip(times, trace.prompt_tokens, trace.output_tokens))
        text = "arrival_s,input_tokens,output_tokens\n" + body
    elif suffix in JSONL_SUFFIXES:
        out = []
        for i, (t, p, o) in enumerate(zip(times, trace.prompt_tokens, trace.output_tokens)):
            obj = {"arrival_s": float(t), "input_tokens": int(p), "output_tokens": int(o)}
            if trace.hash_ids is not None:
                obj["hash_ids"] = trace.hash_ids[i].tolist()
            out.append(json.dumps(obj))
        text = "\n".join(out) + "\n"
    else:
        raise LlmsimError(f"{path}: llmsim traces are .csv or .jsonl, not {path.suffix or 'no extension'!r}")
    path.write_text(text, encoding="utf-8", newline="\n")


def _summary(x: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(np.mean(x)), "max": float(np.max(x))}


def trace_stats(trace: Trace) -> dict:
    """Summary of a trace. Time entries are None for a length table (or with fewer than 2 requests).

    requests; span_s (first to last arrival); rate_per_s = (n - 1) / span_s, i.e. one over the mean
    gap; burstiness_cv = std / mean of the inter-arrival gaps (population std; 1 for Poisson);
    zero_gap_fraction = share of gaps that are exactly 0 (tied timestamps); input_tokens and
    output_tokens: p50, p90, p99 (linear interpolation), mean, max.
    """
    n = len(trace)
    stats: dict = {"requests": n, "span_s": None, "rate_per_s": None, "burstiness_cv": None, "zero_gap_fraction": None}
    if trace.arrival_s is not None and n >= 2:
        gaps = np.diff(trace.arrival_s)
        span = float(trace.arrival_s[-1] - trace.arrival_s[0])
        mean_gap = float(gaps.mean())
        stats.update(
            span_s=span,
            rate_per_s=(n - 1) / span if span > 0 else None,
            burstiness_cv=float(gaps.std()) / mean_gap if mean_gap > 0 else None,
            zero_gap_fraction=float(np.mean(gaps == 0)),
        )
    elif trace.arrival_s is not None:
        stats["span_s"] = 0.0
    stats["input_tokens"] = _summary(trace.prompt_tokens)
    stats["output_tokens"] = _summary(trace.output_tokens)
    return stats
