"""Predicted step times of the shipped profiles, with the roofline floors beside them.

Usage: python benchmarks/step_time_table.py
Prints a Markdown table: Llama-2-7B (TP 1) and Llama-2-70B (TP 4) on each shipped profile, prefill
of 512 / 2048 / 8192 tokens and decode of batch 1 / 32 / 128 at context 1024 / 4096.
"""

from __future__ import annotations

from llmsim.costmodel import BatchShape, list_profiles, load_model, load_profile
from llmsim.costmodel.tables import cost_model_for

CASES = [("llama-2-7b", 1), ("llama-2-70b", 4)]


def shapes():
    for tokens in (512, 2048, 8192):
        yield f"prefill {tokens}", BatchShape((tokens,), (0,))
    for context in (1024, 4096):
        for batch in (1, 32, 128):
            ctx = context + 1
            yield f"decode b={batch} ctx={context}", BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * ctx, decode_context_max_tokens=ctx)


def main() -> None:
    print("| model (TP) | profile | shape | predicted ms | bandwidth floor ms | FLOP floor ms | floor / predicted |")
    print("|---|---|---|---|---|---|---|")
    for name in ("a100-80g-sxm", "h100-80g-sxm"):
        if name not in list_profiles():
            continue
        profile = load_profile(name)
        for model_name, tp in CASES:
            cm = cost_model_for(load_model(model_name), profile, tp)
            for label, shape in shapes():
                t = cm.step_time_s(shape)
                f = cm.floors(shape)
                print(f"| {model_name} (TP {tp}) | {name} ({profile.calibration.fidelity}) | {label} | {t * 1e3:.2f} | "
                      f"{f['bandwidth_floor_s'] * 1e3:.2f} | {f['flop_floor_s'] * 1e3:.2f} | {f['floor_s'] / t:.0%} |")


if __name__ == "__main__":
    main()
