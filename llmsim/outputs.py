"""Where llmsim writes: output paths checked before any work, results folders owned by one run.

Role. Every command that writes (`llmsim run | sweep | capacity | compare`, `llmsim trace convert`)
checks its output path with `check_path` / `check_folder` / `check_file` *before* it simulates or
reads anything big, so a bad path costs no time and leaves nothing behind: a missing parent folder
(only `./results` is created on demand), a path under a regular file, a name or path longer than the
file system allows, a folder without write permission. Each problem is one `LlmsimError` line that
names the path.

A results folder belongs to one run. A non-empty folder is refused unless `--overwrite` is given;
then `clear_owned` removes only the files that command writes (`FolderKind.owned`), never anything
else. The folder's marker file (`summary.json`, `sweep.json`, `capacity.json`) records `run_id`
(uuid4 hex from the operating system, never the simulation's seeded RNG, so runs stay
deterministic) and `files`: the SHA-256 of every data file written with it. The data files stay
plain CSV/Parquet (any pandas reader reads them); `check_files` compares them with the marker, so
`llmsim plot` refuses a file another run left behind.

Units: path and name lengths in bytes, as the file system counts them; no times.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import LlmsimError

DEFAULT_ROOT = Path("results")  # the only folder llmsim creates on demand (relative to the working directory)
NAME_LIMIT_CHARS = 100  # longest scenario-derived folder name
OUT_RULES = ("its parent folder must exist (only ./results is created) and a non-empty folder is refused "
             "unless --overwrite; checked before anything runs")
OVERWRITE_HELP = ("replace the results an earlier llmsim wrote in the output folder: removes only the files this "
                  "command writes (other files are kept); without it a non-empty folder is refused")
OVERWRITE_HINT = "pass --overwrite to replace the files llmsim wrote there (other files are kept), or choose another --out"


@dataclass(frozen=True)
class FolderKind:
    """The files one command writes into its results folder."""

    command: str  # e.g. "llmsim run"
    marker: str  # the file holding run_id and the other files' SHA-256
    owned: tuple[str, ...]  # every file the command (and `llmsim plot` on its folder) may write there


RUN = FolderKind("llmsim run", "summary.json",
                 ("summary.json", "requests.csv", "scenario.yaml", "steps.csv", "timeseries.png", "latency_cdf.png"))
SWEEP = FolderKind("llmsim sweep", "sweep.json",
                   ("sweep.json", "sweep.parquet", "sweep.csv", "goodput.png", "sla_attainment.png", "tail_latency.png", "eviction_rate.png"))
CAPACITY = FolderKind("llmsim capacity", "capacity.json", ("capacity.json", "probes.csv"))
KINDS = (RUN, SWEEP, CAPACITY)


def new_run_id() -> str:
    """A fresh run id: 32 hex digits from the OS's randomness (not the simulation's RNG)."""
    return uuid.uuid4().hex


def safe_name(name: str) -> str:
    """`name` as one harmless path component: letters, digits, '.', '_', '-' only, no leading dot.

    Never a separator, never `.` or `..`: `../etc` becomes `etc`, `a/../b` becomes `a-..-b`; at most
    100 characters; `scenario` when nothing is left.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).lstrip(".-")  # no leading dot: never '.', '..', hidden
    return text[:NAME_LIMIT_CHARS].rstrip("-") or "scenario"


def default_folder(*parts: str) -> Path:
    """results/<part1>-<part2>-..., the joined name made one safe component by `safe_name`."""
    return DEFAULT_ROOT / safe_name("-".join(str(p) for p in parts))


# ------------------------------------------------------------------------------ path checks
def _limits(existing: Path) -> tuple[int, int]:
    """(longest name, longest path) in bytes on the file system holding `existing`."""
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _can_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _nearest_existing(path: Path, shown: Path) -> Path:
    """The deepest ancestor of absolute `path` (itself included) that exists; raises if one is not a folder."""
    for anc in [path, *path.parents]:
        if os.path.lexists(anc):  # os.path: False (not an exception) for a name too long
            if anc != path and not os.path.isdir(anc):
                raise LlmsimError(f"{shown}: {anc} is a file, not a folder")
            return anc
    return Path(path.anchor or ".")


def check_path(path: Path) -> None:
    """Raise `LlmsimError` unless `path` can be written as a file or folder, without creating anything."""
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    existing = _nearest_existing(absolute, path)
    name_max, path_max = _limits(existing if existing.is_dir() else existing.parent)
    too_long = next((part for part in absolute.parts if len(os.fsencode(part)) > name_max), None)
    if too_long is not None:
        raise LlmsimError(f"{path}: name too long ({len(os.fsencode(too_long))} bytes, the file system allows {name_max}): "
                          f"{too_long[:24]}...")
    if len(os.fsencode(str(absolute))) >= path_max:
        raise LlmsimError(f"{path}: path too long ({len(os.fsencode(str(absolute)))} bytes, the file system allows {path_max - 1})")
    parent = absolute.parent
    if existing not in (absolute, parent) and not (parent == Path(os.path.abspath(DEFAULT_ROOT)) and existing == parent.parent):
        raise LlmsimError(f"{path}: parent folder {parent} does not exist (create it first)")
    folder = existing if existing.is_dir() else existing.parent
    if not _can_write(folder):
        raise LlmsimError(f"{path}: cannot write in {folder} (permission denied or a read-only file system)")


def check_file(path: Path, overwrite: bool = False, inputs: Iterable[Path] = (), flag: str = "--overwrite") -> None:
    """Raise unless `path` can be written as one file: `check_path`, not a folder, not one of `inputs`,
    and not an existing file unless `overwrite`."""
    path = Path(path)
    check_path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            same = "" if str(source) == str(path) else f" {source}"
            raise LlmsimError(f"{path}: is the input file{same}; choose another output file (llmsim never writes over its input)")
    if path.is_dir():
        raise LlmsimError(f"{path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise LlmsimError(f"{path}: file exists; pass {flag} to replace it, or choose another output file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_folder(path: Path, kind: FolderKind, overwrite: bool = False) -> None:
    """Raise unless `kind`'s results can go to folder `path`: `check_path`, not a file, and empty
    unless `overwrite` (then not holding another command's results, and no owned name a folder)."""
    path = Path(path)
    check_path(path)
    if path.exists() and not path.is_dir():
        raise LlmsimError(f"{path}: is a file, not a folder")
    if not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise LlmsimError(f"{path}: folder is not empty ({len(entries)} entries: {shown}); {OVERWRITE_HINT}")
    other = next((k for k in KINDS if k is not kind and k.marker in entries), None)
    if other is not None:
        raise LlmsimError(f"{path}: holds {other.command} results ({other.marker}); --overwrite replaces only "
                          f"{kind.command}'s files: choose another --out")
    blocked = next((n for n in kind.owned if (path / n).is_dir() and not (path / n).is_symlink()), None)
    if blocked is not None:
        raise LlmsimError(f"{path / blocked}: is a folder where {kind.command} writes a file; move it or choose another --out")


def clear_owned(path: Path, kind: FolderKind) -> list[str]:
    """Remove the files `kind` owns from folder `path` (nothing else); the names removed."""
    removed = []
    for name in kind.owned:
        p = Path(path) / name
        if p.is_symlink() or p.is_file():
            p.unlink()
            removed.append(name)
    return removed


def write_error(path: Path, e: OSError) -> LlmsimError:
    """One line for a write that failed after the checks (disk full, a folder removed meanwhile)."""
    return LlmsimError(f"{path}: cannot write: {e.strerror or e}")


def prepare_folder(path: Path, kind: FolderKind, overwrite: bool = False) -> None:
    """Just before writing: check `path` again (another process may have filled it meanwhile), create
    it (and ./results), and remove `kind`'s old files."""
    try:
        check_folder(path, kind, overwrite)
    except LlmsimError as e:
        raise LlmsimError(f"{e} (it changed while this command ran; nothing written)") from None
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        clear_owned(path, kind)
    except OSError as e:
        raise LlmsimError(f"{path}: cannot prepare the results folder: {e.strerror}") from None


# ------------------------------------------------------------------------------ one run's files
def digest(path: Path) -> str:
    """'sha256:<hex>' of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def manifest(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: digest} of the named files that exist in `folder`."""
    return {n: digest(Path(folder) / n) for n in names if (Path(folder) / n).is_file()}


def check_files(folder: Path, marker: dict, marker_name: str, names: Iterable[str]) -> list[str]:
    """Raise unless each named file present in `folder` is one the marker's run wrote, unchanged.

    Returns notes: a marker without `run_id`/`files` (an older llmsim, or the Python API without a
    run id) cannot be checked, and says so.
    """
    run_id, files = marker.get("run_id"), marker.get("files")
    if not isinstance(run_id, str) or not isinstance(files, dict):
        note = f"{Path(folder) / marker_name} records no run id (written by an older llmsim): cannot check that its files come from one run"
        return [note]
    for name in names:
        p = Path(folder) / name
        if not p.is_file():
            continue
        if name not in files:
            raise LlmsimError(f"{p}: not written by run {run_id} ({marker_name} does not list it): a file left by another run; "
                              f"rerun with --overwrite or remove it")
        if digest(p) != files[name]:
            raise LlmsimError(f"{p}: not the file run {run_id} wrote ({marker_name} records another SHA-256): "
                              f"from another run or edited; rerun with --overwrite")
    return []
