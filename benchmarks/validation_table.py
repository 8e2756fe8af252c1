"""Predicted against measured for the cost model's validation set (docs/validation.md).

Usage: python benchmarks/validation_table.py [--csv FILE] [--summary-only]
Prints a Markdown table of every public reference point (measured and predicted milliseconds,
signed error) and the median and worst |error| per regime (engine kind, phase, dense/MoE, TP,
GPU). The default set is llmsim/validation/reference_points.csv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llmsim.errors import LlmsimError
from llmsim.validation import (
    DEFAULT_CSV,
    compare,
    format_rows,
    format_summary,
    load_reference_points,
    summarise,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="reference-point CSV (default: the shipped set)")
    parser.add_argument("--summary-only", action="store_true", help="print only the per-regime table")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        results = compare(load_reference_points(args.csv))
    except LlmsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.summary_only:
        print(format_rows(results))
        print()
    print(format_summary(summarise(results)))
    print(f"\n{len(results)} reference points priced in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
