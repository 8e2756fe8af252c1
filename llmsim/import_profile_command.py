"""`llmsim import-profile`: turn published per-operator GPU measurements into a table profile.

One source so far, `vidur` (llmsim.costmodel.import_vidur): Vidur's A100 / H100 CSVs of linear
layers, memory-bound kernels, attention and all-reduce. The command reads them for one model and
the TP degrees asked for, fits the tables as `calibrate-hardware` does, prints the fit report and
the sanity checks, and writes a schema-2 profile with `fidelity: measured-public`. Runs without a
GPU and without torch.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import yaml
from rich.console import Console

from .cli_args import positive_int
from .errors import LlmsimError


def _tp_list(text: str) -> list[int]:
    try:
        tps = sorted({positive_int(part.strip()) for part in text.split(",") if part.strip()})
    except argparse.ArgumentTypeError:
        raise LlmsimError(f"--tp {text!r}: expected comma-separated whole numbers >= 1, e.g. 1 or 1,2,4") from None
    if not tps:
        raise LlmsimError("--tp: give at least one tensor-parallel degree")
    return tps


def add_parser(sub) -> None:
    imp = sub.add_parser("import-profile", help="build a hardware profile from published per-operator measurements (Vidur), no GPU needed")
    imp.add_argument("source_kind", choices=["vidur"], help="whose measurements: vidur (github.com/microsoft/vidur, MIT)")
    imp.add_argument("--gpu", required=True, choices=["a100", "h100"], help="Vidur's GPU folder name")
    imp.add_argument("--model", required=True, help="catalog name or model file; its shape must match the CSV rows")
    imp.add_argument("--tp", default="1", help="comma-separated tensor-parallel degrees to import (default 1)")
    imp.add_argument("--source", type=Path, action="append", required=True, metavar="PATH",
                     help="Vidur's data/profiling folder, a folder holding mlp.csv / attention.csv / all_reduce.csv, "
                          "or those files (repeatable)")
    imp.add_argument("--network", help="Vidur's network folder for all_reduce.csv in a data/profiling tree (default <gpu>_dgx)")
    imp.add_argument("--base", help="template profile for spec peaks, overheads and what the CSVs lack (default: the shipped one for --gpu)")
    imp.add_argument("--name", help="profile name recorded inside the file (default: the --out file name)")
    imp.add_argument("--date", type=datetime.date.fromisoformat, help="date to record, YYYY-MM-DD (default today)")
    imp.add_argument("--out", type=Path, required=True, help="profile YAML to write")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    imp.set_defaults(handler=cmd_import_profile)


def cmd_import_profile(args, console: Console) -> int:
    from .cluster.build import profile_search_dirs
    from .costmodel import load_model, load_profile
    from .costmodel.checks import fit_report_text
    from .costmodel.import_vidur import VIDUR_GPUS, find_sources, import_vidur
    from .outputs import check_file

    check_file(args.out, args.overwrite)
    model = load_model(args.model)
    tps = _tp_list(args.tp)
    base = load_profile(args.base or VIDUR_GPUS[args.gpu][1], profile_search_dirs(Path.cwd()))
    sources = find_sources(args.source, args.gpu, model.hf_id, args.network)
    name = args.name or args.out.stem
    profile = import_vidur(sources, model, tps, args.gpu, base, name, args.date or datetime.date.today())
    console.print(f"[bold]imported[/bold] {sources.describe()}")
    console.print(fit_report_text(profile))
    for check in profile.validation or ():  # the sanity checks fit_profile ran and stored
        status = "skipped" if check.skipped else ("passed" if check.passed else "failed")
        console.print(f"{status.upper():8} {check.name}  {check.detail}", highlight=False)
    header = (f"# Hardware profile imported by `llmsim import-profile vidur --gpu {args.gpu} --model {model.name} --tp {args.tp}`.\n"
              "# Tables from Vidur's published measurements (https://github.com/microsoft/vidur, MIT licence; see\n"
              "# hardware_profiles/README.md); spec peaks and overheads from the template profile named in calibration.notes.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False), encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0
