"""`llmsim calibrate-hardware`: measure this machine's GPU (or CPU), fit, check, write a profile.

Steps: plan the microbenchmarks for the chosen models and TP degrees (docs/cost-model.md §3), run them
with a progress bar (torch, imported lazily), fit the profile tables (llmsim.costmodel.fit), run
the sanity checks of docs/cost-model.md §4, print the fit-quality report and the checks, and write the
profile YAML. What is not measured (spec peaks, engine overheads, all-reduce on one GPU) comes
from a template profile: the shipped profile matching the device, or `--base`.
"""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import LlmsimError


def _template_name(device_name: str, device: str, search_dirs: list[Path]) -> str:
    """The shipped analytic profile whose `device_name` is this GPU's (spec peaks, overheads and
    all-reduce defaults come from it). A GPU without one is refused: reusing another GPU's peaks
    (an H100 SXM's for an H100 PCIe or an L40S, say) would make the sanity checks and every
    unmeasured term wrong without a word. CPU runs use the H100 SXM template, whose peaks the
    checks skip on CPU."""
    from .costmodel import load_profile
    from .costmodel.profile_files import list_profiles

    if device != "cuda":
        return "h100-80g-sxm"
    wanted = _normalised(device_name)
    for name in list_profiles(search_dirs):
        try:
            profile = load_profile(name, search_dirs)
        except LlmsimError:
            continue  # a broken user profile must not stop the choice of a template
        if profile.calibration.fidelity == "analytic" and _normalised(profile.hardware.device_name) == wanted:
            return name
    raise LlmsimError(
        f"no shipped template profile names the GPU '{device_name}' (hardware.device_name), so its spec "
        "peaks and engine overheads are unknown; pass --base <profile> with the closest template "
        "(llmsim list hardware), or add an analytic profile for this GPU to hardware_profiles/"
    )


def _normalised(device_name: str) -> str:
    return " ".join(device_name.lower().split())


def _print_fit(console: Console, raw, profile, models, tps) -> list:
    """Print the fit report, the checks of measurements not fitted (mixed-length decode, fused
    MoE) and the sanity checks; return the sanity checks that failed."""
    from .costmodel.checks import checks_text, fit_report_text, sanity_checks

    console.print(fit_report_text(profile))
    if raw.decode_mixed:
        console.print(_mixed_decode_text(raw, profile))
    if raw.moe_gemm and profile.efficiency.moe_gemm_efficiency is not None:
        console.print(f"fused MoE: grouped GEMMs run at {profile.efficiency.moe_gemm_efficiency:.0%} of the dense GEMM tables' "
                      f"rate (median of {len(raw.moe_gemm)} points): efficiency.moe_gemm_efficiency")
    checks = sanity_checks(profile, models, tps)
    console.print(checks_text(checks))
    return [c for c in checks if not c.passed and not c.skipped]


def _mixed_decode_text(raw, profile) -> str:
    """Paged decode over mixed KV lengths, measured, against the decode fit made on equal lengths
    (launch + per-sequence + per-byte of KV read): how well the table prices a real batch."""
    from .costmodel._attention import kv_bytes_per_token

    configs = {(c.q_heads, c.kv_heads, c.head_dim): c for c in profile.attention.configs} if profile.attention else {}
    lines = ["mixed-length decode (lengths 1/8 to 15/8 of the mean) against the equal-length fit:"]
    for p in raw.decode_mixed:
        cfg = configs.get((p.q_heads, p.kv_heads, p.head_dim))
        if cfg is None or cfg.decode is None:
            continue
        per_token = kv_bytes_per_token(p.kv_heads, p.head_dim, profile.attention.dtype_bytes)
        fit = cfg.decode.launch_s + cfg.decode.s_per_seq * p.batch + cfg.decode.s_per_byte * p.context_sum_tokens * per_token
        lines.append(f"  heads {p.q_heads}/{p.kv_heads}x{p.head_dim} batch {p.batch}, {p.context_sum_tokens} KV tokens: "
                     f"measured {p.seconds * 1e6:.1f} us, fit {fit * 1e6:.1f} us ({fit / p.seconds - 1:+.1%})")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _host_memory_gib() -> float:
    try:
        pages, size = __import__("os").sysconf("SC_PHYS_PAGES"), __import__("os").sysconf("SC_PAGE_SIZE")
        return pages * size / 2**30
    except (ValueError, OSError, AttributeError):
        return 16.0


def _output_path(args, torch, device: str) -> Path:
    """The profile to write (--out, or hardware_profiles/<gpu>.yaml, whose folder is created if
    missing), refused now if it cannot be written or exists without --overwrite."""
    from .outputs import check_file, check_path

    if args.out is not None:
        out = args.out
    else:
        gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu-" + platform.machine()
        out = Path("hardware_profiles") / f"{_slug(gpu)}.yaml"
        if not out.parent.exists():
            check_path(out.parent)
            return out
    check_file(out, args.overwrite)
    return out


def run_calibration(args, console: Console) -> int:
    from .cluster.build import profile_search_dirs
    from .costmodel import load_model, load_profile
    from .costmodel.calibrate import plan_for, require_torch, run_microbenchmarks
    from .costmodel.fit import fit_profile

    torch = require_torch()
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise LlmsimError("no CUDA GPU is visible to torch; run on a GPU machine, or pass --device cpu for a coarse CPU profile")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LlmsimError("--device cuda, but torch sees no CUDA GPU (a CPU build of torch, or no driver); use --device cpu for a coarse CPU profile")
    models = [load_model(m.strip()) for m in args.models.split(",") if m.strip()]
    try:
        tps = [int(x) for x in args.tp.split(",") if x.strip()]
    except ValueError:
        raise LlmsimError(f"--tp {args.tp!r}: expected a comma-separated list of integers, e.g. 1,2,4") from None
    plan = plan_for(models, tps, args.quick, device)
    out = _output_path(args, torch, device)  # checked before minutes of benchmarks, nothing written yet
    search = profile_search_dirs(Path.cwd())
    kind = "cuda" if device.startswith("cuda") else "cpu"
    gpu_name = torch.cuda.get_device_name(torch.device(device)) if kind == "cuda" else ""
    template = args.base or _template_name(gpu_name, kind, search)  # also refused before any benchmark
    base = load_profile(template, search)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"calibrating: {label[:40]:<40}")

        raw = run_microbenchmarks(plan, device=device, progress=progress)

    name = out.stem
    hw_update = {"name": name, "device_name": raw.device_name}
    if raw.device == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        hw_update.update(memory_gib=props.total_memory / 2**30, sm_count=props.multi_processor_count)
    else:
        hw_update.update(memory_gib=_host_memory_gib(), sm_count=1)
    base = base.model_copy(update={"hardware": base.hardware.model_copy(update=hw_update)})
    profile = fit_profile(raw, base, models, plan.tps, datetime.date.today(), name)

    console.print(f"[bold]calibrated[/bold] {raw.device_name} ({raw.device}, {raw.dtype}) in {raw.duration_s:.1f} s; "
                  f"fidelity {profile.calibration.fidelity}; spec peaks and overheads from the '{template}' profile")
    failed = _print_fit(console, raw, profile, models, plan.tps)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Hardware profile measured by `llmsim calibrate-hardware` on {datetime.date.today()}.\n"
        f"# Device: {raw.device_name}; models: {', '.join(m.name for m in models)}; TP {', '.join(map(str, plan.tps))}; "
        f"{'quick grid' if args.quick else 'full grid'}; {raw.duration_s:.0f} s.\n"
    )
    out.write_text(header + yaml.safe_dump(profile.model_dump(mode="json", exclude_none=True), sort_keys=False))
    console.print(f"wrote {out}" + (f"  [yellow]({len(failed)} sanity check(s) failed: see above)[/yellow]" if failed else ""))
    return 0
