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
pandas/numpy calls; Python only walks the rows to split them and to name the bad lines.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..errors import LlmsimError

FORMATS = ("azure", "mooncake", "length-table", "llmsim")

# Columns / keys each format needs: (time, prompt, output); time is None for length tables.
_CSV_COLUMNS = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "length-table": (None, "num_prefill_tokens", "num_decode_tokens"),
    "llmsim": ("arrival_s", "input_tokens", "output_tokens"),
}
_JSON_KEYS = {
    "mooncake": ("timestamp", "input_length", "output_length"),
    "llmsim": ("arrival_s", "input_tokens", "output_tokens"),
}
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_MAX_EXAMPLES = 5
_MAX_TOKENS = 2**53  # whole numbers above this are not exact in float64; no real request is near


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


def _open(path: Path):
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise LlmsimError(f"{path}: trace file not found") from None
    except IsADirectoryError:
        raise LlmsimError(f"{path}: is a folder, expected a trace file") from None


def _first_line(path: Path) -> tuple[int, str]:
    """(line number, text) of the first non-blank line."""
    with _open(path) as f:
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
    is_json = suffix in _JSONL_SUFFIXES or (suffix != ".csv" and line.lstrip().startswith("{"))
    if is_json:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LlmsimError(f"{path}:{lineno}: not valid JSON ({e.msg}), cannot tell the trace format") from None
        if isinstance(obj, dict):
            for fmt, keys in _JSON_KEYS.items():
                if all(k in obj for k in keys):
                    return fmt
        found = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
        raise LlmsimError(
            f"{path}:{lineno}: unknown trace format (keys: {found}); expected Mooncake keys "
            "timestamp, input_length, output_length or llmsim keys arrival_s, input_tokens, output_tokens"
        )
    header = {h.strip() for h in next(csv.reader([line]), [])}
    for fmt, cols in _CSV_COLUMNS.items():
        if all(c in header for c in cols if c is not None):
            return fmt
    raise LlmsimError(
        f"{path}:{lineno}: unknown trace format (header: {line.strip()}); expected TIMESTAMP,ContextTokens,"
        "GeneratedTokens (azure), num_prefill_tokens,num_decode_tokens (length-table) or "
        "arrival_s,input_tokens,output_tokens (llmsim)"
    )


class _Bad:
    """Bad rows found so far, by line number; the first message per line wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_line: dict[int, str] = {}

    def add(self, line: int, what: str) -> None:
        self.by_line.setdefault(int(line), f"{self.path}:{line}: {what}")

    def settle(self, on_bad_row: str) -> tuple[int, list[str]]:
        """Raise for the first bad line in 'error' mode, else (count, first messages)."""
        if not self.by_line:
            return 0, []
        lines = sorted(self.by_line)
        if on_bad_row == "error":
            raise LlmsimError(self.by_line[lines[0]])
        return len(lines), [self.by_line[l] for l in lines[:_MAX_EXAMPLES]]


def read_trace(path: str | Path, format: str | None = None, on_bad_row: Literal["error", "skip"] = "error") -> Trace:
    """Read a trace file; `format` defaults to `detect_format(path)`. See the module docstring."""
    path = Path(path)
    if on_bad_row not in ("error", "skip"):
        raise LlmsimError(f"on_bad_row is {on_bad_row!r}, expected 'error' or 'skip'")
    fmt = detect_format(path) if format is None else format
    if fmt not in FORMATS:
        raise LlmsimError(f"{path}: unknown trace format {fmt!r}, expected one of {', '.join(FORMATS)}")
    bad = _Bad(path)
    if fmt == "mooncake" or (fmt == "llmsim" and path.suffix.lower() in _JSONL_SUFFIXES):
        times, prompt, output, hashes = _read_jsonl(path, fmt, bad)
    else:
        times, prompt, output = _read_csv(path, fmt, bad)
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


# --- CSV ------------------------------------------------------------------------------------------


def _read_csv(path: Path, fmt: str, bad: _Bad) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(times, prompt, output) of the good rows; times in ns (azure) or s (llmsim), None for tables."""
    time_col, in_col, out_col = _CSV_COLUMNS[fmt]
    rows: list[list[str]] = []
    lines: list[int] = []
    with _open(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            while header is not None and _blank(header):
                header = next(reader, None)
            if header is None:
                raise LlmsimError(f"{path}:1: empty file, expected a header with {in_col!r} and {out_col!r}")
            header_line = reader.line_num
            header = [h.strip() for h in header]
            for col in (time_col, in_col, out_col):
                if col is not None and col not in header:
                    raise LlmsimError(f"{path}:{header_line}: no column {col!r} in the header (columns: {', '.join(header)})")
            n = len(header)
            prev = reader.line_num
            for row in reader:
                start, prev = prev + 1, reader.line_num
                if len(row) == n:
                    rows.append(row)
                    lines.append(start)
                elif not _blank(row):
                    bad.add(start, f"expected {n} fields ({', '.join(header)}), found {len(row)}")
        except csv.Error as e:
            raise LlmsimError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from None
        except UnicodeDecodeError:
            raise LlmsimError(f"{path}: not UTF-8 text, expected a CSV trace") from None
    line_no = np.asarray(lines, dtype=np.int64)

    def column(name: str) -> pd.Series:
        i = header.index(name)
        return pd.Series([r[i] for r in rows], dtype=object)

    ok = np.ones(len(rows), dtype=bool)
    times = None
    if fmt == "azure":
        times, good = _timestamps_ns(column(time_col))
        _flag(bad, line_no, good, column(time_col), f"{time_col} is {{!r}}, expected a date and time such as 2023-11-16 18:15:46.6805900")
        ok &= good
    elif fmt == "llmsim":
        times = pd.to_numeric(column(time_col), errors="coerce").to_numpy(dtype=np.float64)
        good = np.isfinite(times)
        _flag(bad, line_no, good, column(time_col), f"{time_col} is {{!r}}, expected a number of seconds")
        ok &= good
    prompt, good = _tokens(column(in_col), in_col, line_no, bad)
    ok &= good
    output, good = _tokens(column(out_col), out_col, line_no, bad)
    ok &= good
    return (None if times is None else times[ok]), prompt[ok], output[ok]


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _flag(bad: _Bad, line_no: np.ndarray, good: np.ndarray, text: pd.Series, template: str) -> None:
    for i in np.flatnonzero(~good):
        bad.add(line_no[i], template.format(str(text.iat[i]).strip()))


def _timestamps_ns(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch (UTC) and a validity mask; any ISO 8601 date-time parses."""
    def parse(s: pd.Series) -> pd.Series:
        return pd.to_datetime(s.str.strip(), format="ISO8601", errors="coerce", utc=True)

    try:
        ts = parse(text)
    except (ValueError, TypeError, OverflowError):  # a value pandas refuses outright: one at a time
        ts = pd.concat([_parse_one(parse, text.iloc[i : i + 1]) for i in range(len(text))])
    good = ts.notna().to_numpy()
    ns = ts.dt.as_unit("ns").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)
    return np.where(good, ns, 0), good


def _parse_one(parse, one: pd.Series) -> pd.Series:
    try:
        return parse(one)
    except (ValueError, TypeError, OverflowError):
        return pd.Series([pd.NaT], index=one.index, dtype="datetime64[ns, UTC]")


def _tokens(text: pd.Series, name: str, line_no: np.ndarray, bad: _Bad) -> tuple[np.ndarray, np.ndarray]:
    """int64 token counts and a validity mask: whole numbers >= 1 ('12', ' 12', '12.0' all read 12)."""
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        number = np.isfinite(num)
        whole = number & (num == np.floor(num)) & (num <= _MAX_TOKENS)
        good = whole & (num >= 1)
    for i in np.flatnonzero(~good):
        shown = str(text.iat[i]).strip()
        why = "expected a whole number of tokens" if not whole[i] else "expected a whole number of tokens >= 1"
        bad.add(line_no[i], f"{name} is {shown!r}, {why}")
    return np.where(good, num, 0).astype(np.int64), good


# --- JSONL ----------------------------------------------------------------------------------------


def _read_jsonl(path: Path, fmt: str, bad: _Bad) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """(times, prompt, output, hash_ids) of the good lines; times in ms (mooncake) or s (llmsim)."""
    t_key, in_key, out_key = _JSON_KEYS[fmt]
    need_hashes = fmt == "mooncake"
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    hashes: list[np.ndarray] = []
    has_hashes: bool | None = True if need_hashes else None  # llmsim: fixed by the first good line
    with _open(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    bad.add(lineno, f"not valid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(obj, dict):
                    bad.add(lineno, f"expected a JSON object, found {type(obj).__name__}")
                    continue
                missing = [k for k in (t_key, in_key, out_key) if k not in obj]
                if need_hashes and "hash_ids" not in obj:
                    missing.append("hash_ids")
                if missing:
                    bad.add(lineno, f"missing key {', '.join(map(repr, missing))}")
                    continue
                t = obj[t_key]
                if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                    bad.add(lineno, f"{t_key} is {t!r}, expected a number of {'milliseconds' if fmt == 'mooncake' else 'seconds'}")
                    continue
                p, why_p = _json_tokens(obj[in_key])
                o, why_o = _json_tokens(obj[out_key])
                if why_p or why_o:
                    bad.add(lineno, f"{in_key} is {obj[in_key]!r}, {why_p}" if why_p else f"{out_key} is {obj[out_key]!r}, {why_o}")
                    continue
                ids = None
                if "hash_ids" in obj:
                    ids = obj["hash_ids"]
                    if not isinstance(ids, list) or not set(map(type, ids)) <= {int} or (ids and not -(2**63) <= min(ids) <= max(ids) < 2**63):
                        bad.add(lineno, f"hash_ids is {str(ids)[:40]!r}, expected a list of whole numbers")
                        continue
                if has_hashes is None:
                    has_hashes = ids is not None
                elif has_hashes != (ids is not None):
                    bad.add(lineno, "hash_ids " + ("missing (earlier lines have them)" if has_hashes else "present (earlier lines have none)"))
                    continue
                times.append(t)
                prompt.append(p)
                output.append(o)
                if ids is not None:
                    hashes.append(np.asarray(ids, dtype=np.int64))
        except UnicodeDecodeError:
            raise LlmsimError(f"{path}: not UTF-8 text, expected a JSONL trace") from None
    t_arr = np.asarray(times, dtype=np.int64 if all(type(t) is int for t in times) else np.float64)
    return t_arr, np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64), (hashes if has_hashes else None)


def _json_tokens(v) -> tuple[int, str]:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v) or abs(v) > _MAX_TOKENS:
        return 0, "expected a whole number of tokens"
    if v < 1:
        return 0, "expected a whole number of tokens >= 1"
    return int(v), ""


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
    elif suffix in _JSONL_SUFFIXES:
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
