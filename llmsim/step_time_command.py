"""`llmsim step-time`: the predicted time of one engine iteration, broken down, with roofline floors.

`add_parser(subparsers)` registers the command; its handler prices one `BatchShape` given as
`--prefill TOKENS`, `--decode BATCH --context TOKENS`, or `--batch FILE` (YAML/JSON with
BatchShape's fields). Every size is checked first: a shape with no token, a negative or
non-integer count, prefix lists that do not match the chunks, or a decode context shorter than
its batch is one `LlmsimError` line naming the option or the file. Units: tokens and sequences in,
milliseconds out.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .cli_args import positive_int
from .costmodel.overheads import PRESETS
from .errors import LlmsimError

_LISTS = ("prefill_chunk_tokens", "prefill_prefix_tokens")
_COUNTS = ("decode_seqs", "decode_context_sum_tokens", "decode_context_max_tokens")


def add_parser(sub) -> None:
    stp = sub.add_parser("step-time", help="predicted iteration time of one batch, with a breakdown and the roofline floors")
    stp.add_argument("--model", required=True, help="catalog name (llmsim list models) or a model YAML")
    stp.add_argument("--hardware", required=True, help="profile name (llmsim list hardware) or a profile YAML")
    stp.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel degree (default 1)")
    shape = stp.add_mutually_exclusive_group(required=True)
    shape.add_argument("--prefill", type=positive_int, metavar="TOKENS", help="one prefill of this many prompt tokens")
    shape.add_argument("--decode", type=positive_int, metavar="BATCH", help="a decode step of this many sequences (with --context)")
    shape.add_argument("--batch", type=Path, metavar="FILE", help="YAML/JSON with BatchShape fields (prefill_chunk_tokens, prefill_prefix_tokens, decode_seqs, decode_context_sum_tokens, decode_context_max_tokens)")
    stp.add_argument("--context", type=positive_int, metavar="TOKENS", help="context length of every decoding sequence")
    stp.add_argument("--overheads", choices=sorted(PRESETS), help="engine-overhead preset instead of the profile's (docs/cost-model.md §1)")
    stp.add_argument("--json", action="store_true", help="print JSON for scripts")
    stp.set_defaults(handler=cmd_step_time)


def _read_batch(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LlmsimError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise LlmsimError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise LlmsimError(f"{path}: invalid YAML/JSON: {' '.join(str(e).split())}") from None
    fields = (*_LISTS, *_COUNTS)
    if not isinstance(data, dict) or set(data) - set(fields):
        bad = sorted(map(str, set(data) - set(fields))) if isinstance(data, dict) else []
        raise LlmsimError(f"{path}: expected a mapping with keys from {', '.join(sorted(fields))}" + (f"; unknown: {', '.join(bad)}" if bad else ""))
    return data


def _whole(path: Path, key: str, value, least: int) -> int:
    if type(value) is not int or value < least:
        raise LlmsimError(f"{path}: {key} must be a whole number >= {least}, got {value!r}")
    return value


def _batch_from_file(path: Path):
    from .costmodel import BatchShape

    data = _read_batch(path)
    lists = {}
    for key in _LISTS:
        raw = data.get(key, [])
        raw = raw if isinstance(raw, list) else [raw]
        lists[key] = tuple(_whole(path, f"{key}[{i}]", v, 1 if key == _LISTS[0] else 0) for i, v in enumerate(raw))
    counts = {key: _whole(path, key, data.get(key, 0), 0) for key in _COUNTS}
    chunks, prefixes = lists[_LISTS[0]], lists[_LISTS[1]]
    if prefixes and len(prefixes) != len(chunks):
        raise LlmsimError(f"{path}: prefill_prefix_tokens has {len(prefixes)} entries for {len(chunks)} prefill chunks "
                          "(one per chunk, or leave it out)")
    seqs, total, longest = counts["decode_seqs"], counts["decode_context_sum_tokens"], counts["decode_context_max_tokens"]
    if seqs and not (1 <= longest <= total and seqs <= total <= seqs * longest):
        raise LlmsimError(f"{path}: {seqs} decoding sequences need decode_context_max_tokens >= 1 and "
                          f"decode_seqs <= decode_context_sum_tokens <= decode_seqs x decode_context_max_tokens, got {total} and {longest}")
    if not chunks and not seqs:
        raise LlmsimError(f"{path}: the batch has no token (no prefill chunk and decode_seqs 0)")
    return BatchShape(chunks, prefixes, seqs, total, longest)


def batch_shape(args):
    """The BatchShape asked for by `--prefill`, `--decode` + `--context` or `--batch`."""
    from .costmodel import BatchShape

    if args.prefill is not None:
        return BatchShape((args.prefill,), (0,))
    if args.decode is not None:
        if args.context is None:
            raise LlmsimError("--decode needs --context TOKENS (the context length of every sequence)")
        ctx = args.context + 1  # the new token attends to itself as well
        return BatchShape(decode_seqs=args.decode, decode_context_sum_tokens=args.decode * ctx, decode_context_max_tokens=ctx)
    return _batch_from_file(args.batch)


def cmd_step_time(args, console: Console) -> int:
    from .cluster.build import profile_search_dirs
    from .costmodel import load_model, load_profile
    from .costmodel.tables import cost_model_for

    model = load_model(args.model)
    profile = load_profile(args.hardware, profile_search_dirs(Path.cwd()))
    if args.overheads is not None:  # replaces the profile's preset and its own numbers, as a scenario's would
        profile = profile.model_copy(update={"overheads": type(profile.overheads)(preset=args.overheads)})
    cm = cost_model_for(model, profile, args.tp)
    shape = batch_shape(args)
    total = cm.step_time_s(shape)
    parts = cm.breakdown(shape)
    floors = cm.floors(shape)
    out = {
        "model": model.name, "hardware": profile.hardware.name, "fidelity": profile.calibration.fidelity,
        "tensor_parallel": args.tp, "cost_model": type(cm).__name__, "overhead_preset": cm.overheads.name,
        "shape": shape._asdict(),
        "step_ms": total * 1e3, "breakdown_ms": {k: v * 1e3 for k, v in parts.items()},
        "bandwidth_floor_ms": floors["bandwidth_floor_s"] * 1e3, "flop_floor_ms": floors["flop_floor_s"] * 1e3,
        "bandwidth_efficiency": floors["bandwidth_floor_s"] / total if total else None,
        "model_flops_utilisation": floors["flop_floor_s"] / total if total else None,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    console.print(f"[bold]{model.name}[/bold] on {profile.hardware.name} (TP {args.tp}, profile {profile.calibration.fidelity}, "
                  f"{type(cm).__name__}, overheads {cm.overheads.name})")
    table = Table(header_style="bold", box=None)
    table.add_column("component")
    table.add_column("ms", justify="right")
    for k, v in parts.items():
        table.add_row(k, f"{v * 1e3:.3f}")
    table.add_row("[bold]step[/bold]", f"[bold]{total * 1e3:.3f}[/bold]")
    console.print(table)
    o = cm.overheads
    console.print(f"overheads preset {o.name}: {o.step_s * 1e3:g} ms per step, {o.per_seq_s * 1e6:g} us per sequence, "
                  f"sampling {o.sampling_bytes_per_logit:g} bytes per logit")
    console.print(f"floors: bandwidth {out['bandwidth_floor_ms']:.3f} ms ({out['bandwidth_efficiency']:.0%} of it achieved), "
                  f"FLOP {out['flop_floor_ms']:.3f} ms (MFU {out['model_flops_utilisation']:.0%})")
    return 0
