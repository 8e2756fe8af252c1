"""The cost model's validation set: public reference latencies and llmsim's predictions of them.

`reference_points.csv` holds published step, prefill and request times of real engines (source,
table and date on each row; docs/validation.md lists them). `load_reference_points` reads and
checks it (`reference.py`); `compare` prices every row with the cost model `llmsim step-time`
would build and `summarise` gives the median and worst error per regime (`compare.py`).
`python benchmarks/validation_table.py` prints both tables. Units: seconds; errors are fractions.
"""

from llmsim.validation.compare import (
    Comparison,
    RegimeSummary,
    compare,
    format_rows,
    format_summary,
    price_point,
    summarise,
)
from llmsim.validation.reference import (
    DEFAULT_CSV,
    ReferencePoint,
    load_reference_points,
)

__all__ = [
    "DEFAULT_CSV",
    "Comparison",
    "ReferencePoint",
    "RegimeSummary",
    "compare",
    "format_rows",
    "format_summary",
    "load_reference_points",
    "price_point",
    "summarise",
]
