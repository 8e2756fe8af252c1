"""Per-format row parsers behind llmsim.workload.readers: CSV and JSONL traces to arrays.

`read_csv` reads the CSV formats (azure, length-table, llmsim CSV) and `read_jsonl` the JSONL ones
(mooncake, llmsim JSONL). Both return the good rows in file order as numpy arrays and record each
bad row in a `BadRows` (``<file>:<line>: <what is wrong>``, lines 1-based); `read_trace` sorts,
rebases and settles them. Units of the returned times as the files store them: nanoseconds since
the epoch (azure), milliseconds (mooncake) or seconds (llmsim); none for length tables. Token
counts are int64, whole numbers >= 1. Columns are parsed with vectorised pandas/numpy calls.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import LlmsimError

# Columns / keys each format needs: (time, prompt, output); time is None for length tables.
CSV_COLUMNS = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "length-table": (None, "num_prefill_tokens", "num_decode_tokens"),
    "llmsim": ("arrival_s", "input_tokens", "output_tokens"),
}
JSON_KEYS = {
    "mooncake": ("timestamp", "input_length", "output_length"),
    "llmsim": ("arrival_s", "input_tokens", "output_tokens"),
}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_MAX_EXAMPLES = 5
_MAX_TOKENS = 2**53  # whole numbers above this are not exact in float64; no real request is near


def open_trace(path: Path):
    """The trace file as text (UTF-8, a byte-order mark dropped); a missing file is an LlmsimError."""
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise LlmsimError(f"{path}: trace file not found") from None
    except IsADirectoryError:
        raise LlmsimError(f"{path}: is a folder, expected a trace file") from None


class BadRows:
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


# --- CSV ------------------------------------------------------------------------------------------


def read_csv(path: Path, fmt: str, bad: BadRows) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(times, prompt, output) of the good rows; times in ns (azure) or s (llmsim), None for tables."""
    time_col, in_col, out_col = CSV_COLUMNS[fmt]
    rows: list[list[str]] = []
    lines: list[int] = []
    with open_trace(path) as f:
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


def _flag(bad: BadRows, line_no: np.ndarray, good: np.ndarray, text: pd.Series, template: str) -> None:
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


def _tokens(text: pd.Series, name: str, line_no: np.ndarray, bad: BadRows) -> tuple[np.ndarray, np.ndarray]:
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


def read_jsonl(path: Path, fmt: str, bad: BadRows) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """(times, prompt, output, hash_ids) of the good lines; times in ms (mooncake) or s (llmsim)."""
    t_key, in_key, out_key = JSON_KEYS[fmt]
    need_hashes = fmt == "mooncake"
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    hashes: list[np.ndarray] = []
    has_hashes: bool | None = True if need_hashes else None  # llmsim: fixed by the first good line
    with open_trace(path) as f:
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
