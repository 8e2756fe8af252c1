"""Reading llmsim's result tables back: `requests.csv`, `steps.csv`, `sweep.csv` / `sweep.parquet`.

`read_table(path, required, numeric)` reads a CSV or Parquet file and checks it before anything is
drawn from it: a file that is not a table (binary, truncated, not UTF-8, empty), a missing column,
or a non-number in a numeric column is one `LlmsimError` line naming the file (and the column and
row), instead of a pandas traceback half-way through a figure. The column lists below are what
`llmsim plot` reads. Units are in the column names (seconds `_s`, tokens, blocks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import LlmsimError

REQUESTS_COLUMNS = ("finished", "ttft_s", "max_tbt_s", "e2e_s")
REQUESTS_NUMERIC = ("ttft_s", "max_tbt_s", "e2e_s")
STEPS_COLUMNS = ("replica", "start_s", "used_blocks", "running", "waiting", "decode_seqs", "prefill_tokens", "evictions_so_far")
SWEEP_COLUMNS = ("scenario", "scheduler", "load", "seed", "goodput_rps", "goodput_tps", "sla_attainment", "ttft_s_p99",
                 "max_tbt_s_p99", "eviction_rate")
SWEEP_NUMERIC = SWEEP_COLUMNS[3:]


def read_table(path, required: Sequence[str] = (), numeric: Sequence[str] = ()) -> pd.DataFrame:
    """The table in `path` (.parquet, else CSV) with every `required` column, `numeric` ones as numbers."""
    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except ImportError:
        raise LlmsimError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
    except (OSError, ValueError) as e:  # pandas' parser and empty-data errors, pyarrow's, bad UTF-8: all ValueError
        raise LlmsimError(f"{path}: cannot read it as a table: {' '.join(str(e).split())[:160]}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LlmsimError(f"{path}: not an llmsim table of this kind (no column {', '.join(missing)})")
    for c in numeric:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero((values.isna() & df[c].notna()).to_numpy())
        if len(bad):
            raise LlmsimError(f"{path}: column {c} holds {df[c].iloc[bad[0]]!r} in row {bad[0] + 1}, not a number")
        df[c] = values
    return df
