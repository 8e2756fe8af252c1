"""The validation set's rows: public reference latencies read from `reference_points.csv`.

`load_reference_points(path)` parses the CSV (lines starting with `#` are comments) into frozen
`ReferencePoint`s and checks every field first: a missing or unknown column, a duplicate id, a
count that is not a whole number >= 1, a phase without the sizes it needs, an unknown unit, model
or hardware profile is one `LlmsimError` naming the file, the line and the field. Nothing is
dropped silently. Units: tokens, sequences, seconds (`measured_s`, converted from the published
unit as the row says).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from llmsim.costmodel.overheads import PRESETS
from llmsim.errors import LlmsimError, read_text

DEFAULT_CSV = Path(__file__).resolve().parent / "reference_points.csv"

COLUMNS = ("id", "source_url", "source_detail", "date", "engine", "engine_kind", "model", "gpu", "tp", "phase",
           "batch", "prompt_tokens", "context_tokens", "output_tokens", "measured", "measured_unit", "unit_note", "overheads")
PHASES = ("prefill", "decode", "request")
ENGINE_KINDS = ("graph", "eager")
UNITS = ("s", "ms", "tokens_per_s")
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(frozen=True)
class ReferencePoint:
    """One published latency and the batch shape it was measured at.

    phase `prefill`: one step of `batch` fresh prompts of `prompt_tokens` each; `decode`: one step
    of `batch` sequences at `context_tokens` each; `request`: a prefill step then
    `output_tokens - 1` decode steps of the whole batch (static batching)."""

    id: str
    source_url: str
    source_detail: str
    date: str
    engine: str
    engine_kind: str
    model: str
    gpu: str
    tp: int
    phase: str
    batch: int
    prompt_tokens: int | None
    context_tokens: int | None
    output_tokens: int | None
    measured: float
    measured_unit: str
    unit_note: str
    overheads: str  # engine-overhead preset the row is priced with (llmsim.costmodel.overheads)
    line: int  # line in the CSV file, for messages

    @property
    def measured_s(self) -> float:
        """The published value in seconds of the phase: output tokens per second of the batch
        become batch x output_tokens / value."""
        if self.measured_unit == "s":
            return self.measured
        if self.measured_unit == "ms":
            return self.measured / 1e3
        return self.batch * self.output_tokens / self.measured  # type: ignore[operator]


def _numbered_rows(path: Path) -> list[tuple[int, list[str]]]:
    text = read_text(path, "reference points")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append((number, next(csv.reader([line]))))
    return rows


class _Row:
    """Field access for one CSV line, with errors that name the file, line and column."""

    def __init__(self, path: Path, line: int, values: dict[str, str]) -> None:
        self.path, self.line, self.values = path, line, values

    def fail(self, field: str, why: str) -> LlmsimError:
        return LlmsimError(f"{self.path}:{self.line}: {field}: {why}")

    def text(self, field: str) -> str:
        value = self.values[field].strip()
        if not value:
            raise self.fail(field, "must not be empty")
        return value

    def choice(self, field: str, allowed: tuple[str, ...]) -> str:
        value = self.text(field)
        if value not in allowed:
            raise self.fail(field, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def count(self, field: str, required: bool) -> int | None:
        raw = self.values[field].strip()
        if not raw:
            if required:
                raise self.fail(field, "is required for this phase")
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise self.fail(field, f"must be a whole number >= 1, got {raw!r}")
        return int(raw)

    def positive(self, field: str) -> float:
        raw = self.text(field)
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(field, f"must be a number, got {raw!r}") from None
        if not value > 0 or value == float("inf"):
            raise self.fail(field, f"must be a finite number > 0, got {raw!r}")
        return value


def _point(row: _Row) -> ReferencePoint:
    phase = row.choice("phase", PHASES)
    unit = row.choice("measured_unit", UNITS)
    if unit == "tokens_per_s" and phase != "request":
        raise row.fail("measured_unit", "tokens_per_s is only defined for phase request")
    url, date = row.text("source_url"), row.text("date")
    if not url.startswith("https://"):
        raise row.fail("source_url", f"must be an https:// address, got {url!r}")
    if not _DATE.match(date):
        raise row.fail("date", f"must be YYYY, YYYY-MM or YYYY-MM-DD, got {date!r}")
    output = row.count("output_tokens", required=phase == "request")
    if phase == "prefill" and output not in (None, 1):
        raise row.fail("output_tokens", "a prefill point emits one token: leave it empty or write 1")
    return ReferencePoint(
        id=row.text("id"), source_url=url, source_detail=row.text("source_detail"), date=date,
        engine=row.text("engine"), engine_kind=row.choice("engine_kind", ENGINE_KINDS), model=row.text("model"),
        gpu=row.text("gpu"), tp=row.count("tp", True), phase=phase, batch=row.count("batch", True),  # type: ignore[arg-type]
        prompt_tokens=row.count("prompt_tokens", required=phase != "decode"),
        context_tokens=row.count("context_tokens", required=phase == "decode"), output_tokens=output,
        measured=row.positive("measured"), measured_unit=unit, unit_note=row.values["unit_note"].strip(),
        overheads=row.choice("overheads", tuple(PRESETS)), line=row.line)


def _check_names(path: Path, points: list[ReferencePoint], profile_dirs) -> None:
    """Every model in llmsim's catalog, every GPU a profile, every TP valid for its model."""
    from llmsim.costmodel import list_models, list_profiles, load_model

    models, profiles = set(list_models()), set(list_profiles(profile_dirs))
    archs: dict[str, object] = {}
    for p in points:
        if p.model not in models:
            raise LlmsimError(f"{path}:{p.line}: model: {p.model!r} is not in llmsim's catalog ({', '.join(sorted(models))})")
        if p.gpu not in profiles:
            raise LlmsimError(f"{path}:{p.line}: gpu: no hardware profile {p.gpu!r} ({', '.join(sorted(profiles))})")
        if p.model not in archs:
            archs[p.model] = load_model(p.model)
        try:
            archs[p.model].check_tensor_parallel(p.tp)  # type: ignore[attr-defined]
        except LlmsimError as e:
            raise LlmsimError(f"{path}:{p.line}: tp: {e}") from None


def load_reference_points(path: Path | str = DEFAULT_CSV, profile_dirs=()) -> list[ReferencePoint]:
    """The rows of a reference-point CSV, checked (see the module docstring)."""
    path = Path(path)
    rows = _numbered_rows(path)
    if not rows:
        raise LlmsimError(f"{path}: no header line and no rows")
    (header_line, header), body = rows[0], rows[1:]
    missing, unknown = set(COLUMNS) - set(header), set(header) - set(COLUMNS)
    if missing or unknown or len(header) != len(set(header)):
        raise LlmsimError(f"{path}:{header_line}: header must name the columns {', '.join(COLUMNS)} once each"
                          + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
                          + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
    points, seen = [], {}
    for line, values in body:
        if len(values) != len(header):
            raise LlmsimError(f"{path}:{line}: {len(values)} fields for {len(header)} columns (quote fields that hold commas)")
        point = _point(_Row(path, line, dict(zip(header, values))))
        if point.id in seen:
            raise LlmsimError(f"{path}:{line}: id: {point.id!r} already used on line {seen[point.id]}")
        seen[point.id] = line
        points.append(point)
    if not points:
        raise LlmsimError(f"{path}: no reference points after the header")
    _check_names(path, points, profile_dirs)
    return points
