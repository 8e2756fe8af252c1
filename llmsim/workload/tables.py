"""Readers for length tables: CSV files of (prompt, output) token counts with no timestamps,
such as traces/sharegpt/ and traces/arxiv/.

A malformed row is an error that names the file and its line (1-based, header is line 1); nothing
is skipped silently.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import LlmsimError


def read_length_table(path: str | Path, input_column: str, output_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, output_tokens) arrays of a CSV length table."""
    path = Path(path)
    try:
        f = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise LlmsimError(f"{path}: trace file not found (relative paths are resolved against the scenario file's folder)") from None
    prompts: list[int] = []
    outputs: list[int] = []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LlmsimError(f"{path}:1: empty file, expected a header with {input_column!r} and {output_column!r}")
        header = [h.strip() for h in header]
        for col in (input_column, output_column):
            if col not in header:
                raise LlmsimError(f"{path}:1: no column {col!r} in the header (columns: {', '.join(header)})")
        i_in, i_out = header.index(input_column), header.index(output_column)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank line: not a request
            if len(row) != len(header):
                raise LlmsimError(f"{path}:{line}: expected {len(header)} fields, found {len(row)}")
            prompts.append(_positive_int(row[i_in], path, line, input_column))
            outputs.append(_positive_int(row[i_out], path, line, output_column))
    if not prompts:
        raise LlmsimError(f"{path}: no rows after the header")
    return np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)


def _positive_int(text: str, path: Path, line: int, column: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise LlmsimError(f"{path}:{line}: {column} is {text.strip()!r}, expected a whole number of tokens") from None
    if value != int(value) or value < 1:
        raise LlmsimError(f"{path}:{line}: {column} is {text.strip()!r}, expected a whole number of tokens >= 1")
    return int(value)
