"""Hostile input across the command line (issue 22, item 4): each case must end with exit status 2,
exactly one line on stderr starting `llmsim: error: ` (naming what is wrong), no traceback, and
nothing written (no results folder, no output file, no figure).

Every case calls `llmsim.cli.main` in this process from a fresh working directory (so a default
`results/` folder would land there and be seen); a few also run as real subprocesses. The base
scenario is tiny and priced by the constant cost model, so a case that is wrongly accepted costs a
fraction of a second instead of hanging the suite. A case is (id, argv builder, fragments the
error line must contain); builders write their files into the case's temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hostile_builders import (AZURE_HEADER, CLOSED, GAMMA, INF, LOGNORMAL, NAN, OLD_SUMMARY, REQUESTS_HEADER, TABLE_HEADER,
                              UNIFORM, Builder, batch_file, capacity, compare, convert, plot_edited_after_the_run, plot_run,
                              raw_scenario, run, scenario_file, stats, step_time, sweep, table_lengths, validate, write_file)

from llmsim.cli import main


# ------------------------------------------------------------------------------------ the cases
CASES: list[tuple[str, Builder, tuple[str, ...]]] = [
    # seeds
    ("seed-negative", run({"seed": -1}), ("seed",)),
    ("seed-negative-flag", run({}, "--seed", "-3"), ("seed",)),
    ("seed-negative-set", run({}, "--set", "seed=-3"), ("seed",)),
    ("seed-fraction", run({"seed": 1.5}), ("seed",)),
    ("seed-inf", run({"seed": INF}), ("seed",)),
    ("seed-text-flag", run({}, "--seed", "abc"), ("--seed",)),
    # inf / NaN / zero / negative numbers in the scenario
    ("sla-ttft-inf", run({"sla.ttft_s": INF}), ("sla.ttft_s",)),
    ("sla-ttft-nan", run({"sla.ttft_s": NAN}), ("sla.ttft_s",)),
    ("sla-ttft-inf-set", run({}, "--set", "sla.ttft_s=.inf"), ("sla.ttft_s",)),
    ("sla-max-tbt-negative", run({"sla.max_tbt_s": -1.0}), ("sla.max_tbt_s",)),
    ("sla-tpot-zero", run({"sla.tpot_s": 0.0}), ("sla.tpot_s",)),
    ("sla-e2e-text", run({"sla.e2e_s": "fast"}), ("sla.e2e_s",)),
    ("rate-zero", run({"workload.arrivals.rate_per_s": 0.0}), ("rate_per_s",)),
    ("rate-negative", run({"workload.arrivals.rate_per_s": -2.0}), ("rate_per_s",)),
    ("rate-inf", run({"workload.arrivals.rate_per_s": INF}), ("rate_per_s",)),
    ("rate-nan", run({"workload.arrivals.rate_per_s": NAN}), ("rate_per_s",)),
    ("rate-near-zero", run({"workload.arrivals.rate_per_s": 1e-300}), ("rate_per_s",)),
    ("gamma-cv-zero", run({"workload.arrivals": {**GAMMA, "cv": 0.0}}), ("cv",)),
    ("gamma-cv-negative", run({"workload.arrivals": {**GAMMA, "cv": -1.0}}), ("cv",)),
    ("gamma-cv-near-zero", run({"workload.arrivals": {**GAMMA, "cv": 1e-300}}), ("cv",)),
    ("gamma-cv-inf", run({"workload.arrivals": {**GAMMA, "cv": INF}}), ("cv",)),
    ("gamma-cv-nan", run({"workload.arrivals": {**GAMMA, "cv": NAN}}), ("cv",)),
    ("gamma-cv-huge", run({"workload.arrivals": {**GAMMA, "cv": 1e200}}), ("cv",)),
    ("gamma-rate-near-zero", run({"workload.arrivals": {**GAMMA, "rate_per_s": 1e-300}}), ("rate_per_s",)),
    ("clients-zero", run({"workload.arrivals": {**CLOSED, "clients": 0}}), ("clients",)),
    ("clients-negative", run({"workload.arrivals": {**CLOSED, "clients": -3}}), ("clients",)),
    ("clients-huge", run({"workload.arrivals": {**CLOSED, "clients": 10**12}, "workload.num_requests": None,
                          "workload.duration_s": 10.0}), ("clients",)),
    ("think-time-negative", run({"workload.arrivals": {**CLOSED, "think_time_s": -1.0}}), ("think_time_s",)),
    ("think-time-inf", run({"workload.arrivals": {**CLOSED, "think_time_s": INF}}), ("think_time_s",)),
    ("think-time-nan", run({"workload.arrivals": {**CLOSED, "think_time_s": NAN}}), ("think_time_s",)),
    ("think-time-ages", run({"workload.arrivals": {**CLOSED, "think_time_s": 1e300}}), ("think_time_s",)),
    ("max-attempts-zero", run({"workload.arrivals": {**CLOSED, "resend_failed": True, "max_attempts": 0}}), ("max_attempts",)),
    ("num-requests-zero", run({"workload.num_requests": 0}), ("num_requests",)),
    ("num-requests-negative", run({"workload.num_requests": -5}), ("num_requests",)),
    ("num-requests-1e12", run({"workload.num_requests": 1e12}), ("num_requests", "memory")),
    ("num-requests-10-to-the-12", run({"workload.num_requests": 10**12}), ("num_requests", "memory")),
    ("num-requests-1e12-set", run({}, "--set", "workload.num_requests=1000000000000"), ("num_requests", "memory")),
    ("num-requests-inf", run({"workload.num_requests": INF}), ("num_requests",)),
    ("num-requests-nan", run({"workload.num_requests": NAN}), ("num_requests",)),
    ("num-requests-text", run({"workload.num_requests": "many"}), ("num_requests",)),
    ("duration-negative", run({"workload.num_requests": None, "workload.duration_s": -1.0}), ("duration_s",)),
    ("duration-inf", run({"workload.num_requests": None, "workload.duration_s": INF}), ("duration_s",)),
    ("duration-nan", run({"workload.num_requests": None, "workload.duration_s": NAN}), ("duration_s",)),
    ("duration-too-many-requests", run({"workload.num_requests": None, "workload.duration_s": 1e13}), ("memory",)),
    ("input-tokens-zero", run({"workload.lengths.input_tokens": 0}), ("input_tokens",)),
    ("input-tokens-negative", run({"workload.lengths.input_tokens": -1}), ("input_tokens",)),
    ("input-tokens-inf", run({"workload.lengths.input_tokens": INF}), ("input_tokens",)),
    ("input-tokens-nan", run({"workload.lengths.input_tokens": NAN}), ("input_tokens",)),
    ("input-tokens-fraction", run({"workload.lengths.input_tokens": 1.5}), ("input_tokens",)),
    ("output-tokens-zero", run({"workload.lengths.output_tokens": 0}), ("output_tokens",)),
    ("output-tokens-huge", run({"workload.lengths.output_tokens": 10**12, "workload.max_new_tokens": "exact"}),
     ("max_model_len",)),
    ("uniform-min-above-max", run({"workload.lengths": {**UNIFORM, "input_tokens": [100, 10]}}), ("input_tokens",)),
    ("uniform-zero", run({"workload.lengths": {**UNIFORM, "output_tokens": [0, 10]}}), ("output_tokens",)),
    ("uniform-nan", run({"workload.lengths": {**UNIFORM, "output_tokens": [NAN, 10]}}), ("output_tokens",)),
    ("uniform-one-value", run({"workload.lengths": {**UNIFORM, "input_tokens": [10]}}), ("input_tokens",)),
    ("lognormal-min-above-max", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": 100, "sigma": 0.5,
                                                                                          "min": 500, "max": 10}}}),
     ("input_tokens", "min")),
    ("lognormal-median-zero", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": 0, "sigma": 0.5}}}), ("median",)),
    ("lognormal-median-inf", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": INF, "sigma": 0.5}}}), ("median",)),
    ("lognormal-median-nan", run({"workload.lengths": {**LOGNORMAL, "output_tokens": {"median": NAN, "sigma": 0.5}}}), ("median",)),
    ("lognormal-sigma-negative", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": 100, "sigma": -1}}}), ("sigma",)),
    ("lognormal-sigma-inf", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": 100, "sigma": INF}}}), ("sigma",)),
    ("lognormal-sigma-nan", run({"workload.lengths": {**LOGNORMAL, "input_tokens": {"median": 100, "sigma": NAN}}}), ("sigma",)),
    ("max-new-tokens-exactly", run({"workload.max_new_tokens": "exactly"}), ("max_new_tokens", "'exact'")),
    ("max-new-tokens-zero", run({"workload.max_new_tokens": 0}), ("max_new_tokens",)),
    ("max-new-tokens-negative", run({"workload.max_new_tokens": -1}), ("max_new_tokens",)),
    ("max-new-tokens-inf", run({"workload.max_new_tokens": INF}), ("max_new_tokens",)),
    ("max-new-tokens-fraction", run({"workload.max_new_tokens": 1.5}), ("max_new_tokens",)),
    # engine and cluster
    ("block-size-zero", run({"engine.block_size": 0}), ("block_size",)),
    ("block-size-inf", run({"engine.block_size": INF}), ("block_size",)),
    ("max-num-seqs-zero", run({"engine.max_num_seqs": 0}), ("max_num_seqs",)),
    ("max-batched-tokens-negative", run({"engine.max_batched_tokens": -8}), ("max_batched_tokens",)),
    ("max-model-len-zero", run({"engine.max_model_len": 0}), ("max_model_len",)),
    ("kv-capacity-zero", run({"engine.kv_capacity_tokens": 0}), ("kv_capacity_tokens",)),
    ("kv-capacity-above-gpu-memory", run({"engine.kv_capacity_tokens": 10**12}), ("kv_capacity_tokens", "GiB")),
    ("kv-capacity-above-gpu-memory-validate", validate({"engine.kv_capacity_tokens": 10_000_000}), ("kv_capacity_tokens", "GiB")),
    ("kv-capacity-nan", run({"engine.kv_capacity_tokens": NAN}), ("kv_capacity_tokens",)),
    ("gpu-memory-fraction-above-one", run({"engine.gpu_memory_fraction": 1.5}), ("gpu_memory_fraction",)),
    ("gpu-memory-fraction-nan", run({"engine.gpu_memory_fraction": NAN}), ("gpu_memory_fraction",)),
    ("activation-reserve-inf", run({"engine.activation_reserve_gib": INF}), ("activation_reserve_gib",)),
    ("swap-space-inf", run({"engine.swap_space_gib": INF}), ("swap_space_gib",)),
    ("swap-space-negative", run({"engine.swap_space_gib": -1.0}), ("swap_space_gib",)),
    ("guard-max-queue-zero", run({"engine.sla_guard.max_queue_s": 0.0}), ("max_queue_s",)),
    ("guard-max-tbt-nan", run({"engine.sla_guard.max_tbt_s": NAN}), ("max_tbt_s",)),
    ("replicas-zero", run({"cluster.replicas": 0}), ("replicas",)),
    ("replicas-huge", run({"cluster.replicas": 10**9}), ("replicas", "memory")),
    ("tensor-parallel-zero", run({"cluster.tensor_parallel": 0}), ("tensor_parallel",)),
    ("tensor-parallel-not-dividing-heads", run({"cluster.tensor_parallel": 3}), ("tensor_parallel",)),
    ("router-unknown", run({"cluster.router": "fastest"}), ("router",)),
    ("step-time-zero", run({"cost_model.step_time_s": 0.0}), ("step_time_s",)),
    ("step-time-inf", run({"cost_model.step_time_s": INF}), ("step_time_s",)),
    ("step-time-nan", run({"cost_model.step_time_s": NAN}), ("step_time_s",)),
    ("step-time-ages", run({"cost_model.step_time_s": 1e300}), ("step_time_s",)),
    ("per-token-negative", run({"cost_model.per_token_s": -1.0}), ("per_token_s",)),
    ("overhead-inf", run({"cost_model": {"kind": "analytic", "step_overhead_s": INF}}), ("step_overhead_s",)),
    ("headroom-nan", run({"scheduler": {"kind": "past-future", "past-future": {"headroom": NAN}}}), ("headroom", "finite")),
    ("history-window-zero", run({"scheduler": {"kind": "past-future", "past-future": {"history_window": 0}}}), ("history_window",)),
    ("watermark-above-one", run({"scheduler": {"kind": "aggressive", "aggressive": {"watermark": 1.5}}}), ("watermark",)),
    ("watermark-nan", run({"scheduler": {"kind": "aggressive", "aggressive": {"watermark": NAN}}}), ("watermark", "finite")),
    # the scenario file itself
    ("scenario-not-utf8", raw_scenario(b"name: \xff\xfe bad\nmodel: llama-2-7b\n"), ("UTF-8",)),
    ("scenario-not-utf8-validate", raw_scenario(b"\xff\xfe\x00n\x00a\x00m\x00e", "validate"), ("UTF-8",)),
    ("scenario-binary", raw_scenario(bytes(range(256)) * 4), ("s.yaml",)),
    ("scenario-empty", raw_scenario(""), ("s.yaml",)),
    ("scenario-a-list", raw_scenario("- a\n- b\n"), ("mapping",)),
    ("scenario-a-folder", lambda t: ["run", str(t), "--out", str(t / "out")], ("directory",)),
    ("model-unknown", run({"model": "llama-9-1b"}), ("llama-9-1b",)),
    ("model-file-not-utf8", lambda t: run({"model": write_file(t, "m.yaml", b"\xff\xfe\xfa")})(t), ("m.yaml",)),
    ("hardware-unknown", run({"hardware": "h900"}), ("h900",)),
    ("hardware-file-not-utf8", lambda t: run({"hardware": write_file(t, "h.yaml", b"\xff\xfe\xfa")})(t), ("h.yaml",)),
    ("hardware-file-a-list", lambda t: run({"hardware": write_file(t, "h.yaml", "- 1\n")})(t), ("h.yaml",)),
    ("set-without-equals", run({}, "--set", "workload.num_requests"), ("--set",)),
    ("set-into-a-value", run({}, "--set", "seed.x=1"), ("seed",)),
    # length tables and traces
    ("table-not-utf8", table_lengths(b"num_prefill_tokens,num_decode_tokens\n\xff\xfe,7\n"), ("lengths.csv",)),
    ("table-empty", table_lengths(b""), ("lengths.csv",)),
    ("table-header-only", table_lengths(""), ("lengths.csv",)),
    ("table-negative-tokens", table_lengths("100,20\n-5,7\n"), ("lengths.csv",)),
    ("table-zero-tokens", table_lengths("100,20\n0,0\n"), ("lengths.csv",)),
    ("table-inf-tokens", table_lengths("100,20\ninf,7\n"), ("lengths.csv",)),
    ("table-binary", table_lengths(bytes(range(256)) * 8), ("lengths.csv",)),
    # validate
    ("validate-rate-inf", validate({"workload.arrivals.rate_per_s": INF}), ("rate_per_s",)),
    ("validate-num-requests-1e12", validate({"workload.num_requests": 10**12}), ("num_requests", "memory")),
    ("validate-seed-negative", validate({}, "--seed", "-1"), ("seed",)),
    # sweep
    ("sweep-load-zero", sweep("--loads", "0"), ("--loads",)),
    ("sweep-load-negative", sweep("--loads", "-1,2"), ("--loads",)),
    ("sweep-load-inf", sweep("--loads", "inf"), ("--loads",)),
    ("sweep-load-nan", sweep("--loads", "nan"), ("--loads",)),
    ("sweep-load-near-zero", sweep("--loads", "1e-300"), ("1e-300",)),
    ("sweep-load-text", sweep("--loads", "fast"), ("--loads",)),
    ("sweep-grid-backwards", sweep("--loads", "5:1:1"), ("--loads",)),
    ("sweep-grid-step-zero", sweep("--loads", "1:5:0"), ("--loads",)),
    ("sweep-grid-too-many", sweep("--loads", "1:1e9:1"), ("--loads",)),
    ("sweep-seeds-zero", sweep("--loads", "1", "--seeds", "0"), ("seeds",)),
    ("sweep-scheduler-unknown", sweep("--loads", "1", "--schedulers", "fifo"), ("fifo",)),
    ("sweep-executor-unknown", sweep("--loads", "1", "--executor", "threads"), ("threads",)),
    ("sweep-sla-inf", sweep("--loads", "1", edits={"sla.ttft_s": INF}), ("sla.ttft_s",)),
    ("sweep-seeds-huge", sweep("--loads", "1,2", "--seeds", "1000000"), ("seeds",)),
    ("sweep-grid-to-inf", sweep("--loads", "1:inf:1"), ("--loads",)),
    # capacity
    ("capacity-target-above-one", capacity("--target-attainment", "1.5"), ("--target-attainment",)),
    ("capacity-target-nan", capacity("--target-attainment", "nan"), ("--target-attainment",)),
    ("capacity-warmup-one", capacity("--warmup-fraction", "1"), ("--warmup-fraction",)),
    ("capacity-warmup-negative", capacity("--warmup-fraction", "-0.1"), ("--warmup-fraction",)),
    ("capacity-seeds-zero", capacity("--seeds", "0"), ("seeds",)),
    ("capacity-rel-tol-zero", capacity("--rel-tol", "0"), ("--rel-tol",)),
    ("capacity-rel-tol-nan", capacity("--rel-tol", "nan"), ("--rel-tol",)),
    ("capacity-start-load-negative", capacity("--start-load", "-1"), ("load -1",)),
    ("capacity-start-load-inf", capacity("--start-load", "inf"), ("--start-load",)),
    ("capacity-scheduler-unknown", capacity("--scheduler", "fifo"), ("fifo",)),
    # compare
    ("compare-scheduler-unknown", compare("--schedulers", "fifo"), ("fifo",)),
    ("compare-sla-nan", compare(edits={"sla.max_tbt_s": NAN}), ("sla.max_tbt_s",)),
    ("compare-out-is-the-scenario", lambda t: ["compare", scenario_file(t, {}), "--out", str(t / "s.yaml"), "--overwrite"], ("input",)),
    # plot
    ("plot-missing-folder", lambda t: ["plot", str(t / "nowhere")], ("no such folder",)),
    ("plot-a-file", lambda t: ["plot", write_file(t, "f.txt", "x")], ("f.txt", "is a file")),
    ("plot-requests-garbage", plot_run({"summary.json": OLD_SUMMARY, "requests.csv": bytes(range(256)) * 8}), ("requests.csv",)),
    ("plot-requests-empty", plot_run({"summary.json": OLD_SUMMARY, "requests.csv": ""}), ("requests.csv",)),
    ("plot-requests-wrong-columns", plot_run({"summary.json": OLD_SUMMARY, "requests.csv": "a,b\n1,2\n"}), ("requests.csv",)),
    ("plot-requests-text-in-numbers", plot_run({"summary.json": OLD_SUMMARY,
                                                "requests.csv": REQUESTS_HEADER + "0,0,1,1,True,soon,0.1,0.1\n"}), ("requests.csv",)),
    ("plot-requests-not-utf8", plot_run({"summary.json": OLD_SUMMARY, "requests.csv": REQUESTS_HEADER.encode() + b"\xff\xfe\n"}),
     ("requests.csv",)),
    ("plot-steps-garbage", plot_run({"summary.json": OLD_SUMMARY, "requests.csv": REQUESTS_HEADER + "0,0,1,1,True,0.1,0.1,0.1\n",
                                     "steps.csv": "start_s\nsoon\n"}), ("steps.csv",)),
    ("plot-summary-not-json", plot_run({"summary.json": "{not json", "requests.csv": REQUESTS_HEADER}), ("summary.json",)),
    ("plot-summary-not-utf8", plot_run({"summary.json": b"\xff\xfe{}", "requests.csv": REQUESTS_HEADER}), ("summary.json",)),
    ("plot-summary-a-list", plot_run({"summary.json": "[1, 2]", "requests.csv": REQUESTS_HEADER}), ("summary.json",)),
    ("plot-requests-edited-after-the-run", plot_edited_after_the_run, ("requests.csv",)),
    ("plot-sweep-csv-garbage", plot_run({"sweep.csv": bytes(range(256)) * 8}), ("sweep.csv",)),
    ("plot-sweep-parquet-garbage", plot_run({"sweep.parquet": b"PAR1 not really"}), ("sweep.parquet",)),
    ("plot-sweep-csv-wrong-columns", plot_run({"sweep.csv": "a,b\n1,2\n"}), ("sweep.csv",)),
    # step-time
    ("step-time-decode-zero", step_time("--decode", "0", "--context", "100"), ("--decode",)),
    ("step-time-decode-negative", step_time("--decode", "-4", "--context", "100"), ("--decode",)),
    ("step-time-context-negative", step_time("--decode", "4", "--context", "-100"), ("--context",)),
    ("step-time-context-zero", step_time("--decode", "4", "--context", "0"), ("--context",)),
    ("step-time-prefill-zero", step_time("--prefill", "0"), ("--prefill",)),
    ("step-time-prefill-negative", step_time("--prefill", "-10"), ("--prefill",)),
    ("step-time-tp-zero", step_time("--prefill", "10", "--tp", "0"), ("--tp",)),
    ("step-time-tp-not-dividing-heads", step_time("--prefill", "10", "--tp", "3"), ("tensor_parallel",)),
    ("step-time-decode-text", step_time("--decode", "many", "--context", "100"), ("--decode",)),
    ("step-time-no-shape", step_time(), ("--prefill",)),
    ("step-time-model-unknown", lambda t: ["step-time", "--model", "gpt-9", "--hardware", "h100-80g-sxm", "--prefill", "10"], ("gpt-9",)),
    ("step-time-batch-missing", lambda t: step_time("--batch", str(t / "none.yaml"))(t), ("none.yaml",)),
    ("step-time-batch-not-utf8", batch_file(b"decode_seqs: \xff\xfe\n"), ("batch.yaml",)),
    ("step-time-batch-a-list", batch_file("- 1\n- 2\n"), ("batch.yaml",)),
    ("step-time-batch-negative", batch_file("decode_seqs: -3\ndecode_context_sum_tokens: 10\ndecode_context_max_tokens: 5\n"),
     ("batch.yaml",)),
    ("step-time-batch-nan", batch_file("prefill_chunk_tokens: [.nan]\nprefill_prefix_tokens: [0]\n"), ("batch.yaml",)),
    ("step-time-batch-text", batch_file("decode_seqs: many\n"), ("batch.yaml",)),
    ("step-time-batch-mismatched-lists", batch_file("prefill_chunk_tokens: [10, 20]\nprefill_prefix_tokens: [0]\n"), ("batch.yaml",)),
    # trace convert and stats
    ("convert-input-missing", lambda t: ["trace", "convert", str(t / "none.csv"), str(t / "out.csv")], ("none.csv",)),
    ("convert-not-utf8", convert(b"num_prefill_tokens,num_decode_tokens\n\xff\xfe,1\n", "--poisson-rate", "1"), ("trace.csv",)),
    ("convert-empty", convert(b"", "--poisson-rate", "1"), ("trace.csv",)),
    ("convert-binary", convert(bytes(range(256)) * 8, "--poisson-rate", "1"), ("trace.csv",)),
    ("convert-rate-zero", convert(TABLE_HEADER + "10,2\n", "--poisson-rate", "0"), ("--poisson-rate",)),
    ("convert-rate-negative", convert(TABLE_HEADER + "10,2\n", "--poisson-rate", "-1"), ("--poisson-rate",)),
    ("convert-rate-nan", convert(TABLE_HEADER + "10,2\n", "--poisson-rate", "nan"), ("--poisson-rate",)),
    ("convert-rate-inf", convert(TABLE_HEADER + "10,2\n", "--poisson-rate", "inf"), ("--poisson-rate",)),
    ("convert-rate-near-zero", convert(TABLE_HEADER + "10,2\n20,3\n", "--poisson-rate", "1e-300"), ("--poisson-rate",)),
    ("convert-seed-negative", convert(TABLE_HEADER + "10,2\n", "--poisson-rate", "1", "--seed", "-1"), ("--seed",)),
    ("convert-negative-tokens", convert(AZURE_HEADER + "2023-11-16 18:15:46.6805900,-4,2\n"), ("trace.csv",)),
    ("convert-bad-timestamp", convert(AZURE_HEADER + "yesterday,4,2\n"), ("trace.csv",)),
    ("convert-out-extension", lambda t: ["trace", "convert", write_file(t, "trace.csv", TABLE_HEADER + "1,1\n"), str(t / "out.txt"),
                                         "--poisson-rate", "1"], ("out.txt",)),
    ("stats-not-utf8", stats(b"\xff\xfe\x00\x01"), ("trace.csv",)),
    ("stats-empty", stats(b""), ("trace.csv",)),
    ("stats-jsonl-garbage", stats("{not json\n", name="trace.jsonl"), ("trace.jsonl",)),
    # list
    ("list-unknown-category", lambda t: ["list", "gpus"], ("gpus",)),
]
SUBPROCESS_CASES = ("scenario-not-utf8", "num-requests-10-to-the-12", "list-unknown-category")


# ------------------------------------------------------------------------------------ the checks
def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _check(status, out: str, err: str, fragments: tuple[str, ...], before: dict, after: dict) -> None:
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("llmsim: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert status == 2
    assert after == before, sorted(set(after) - set(before))  # nothing written, nothing changed


@pytest.mark.parametrize("build, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_nothing_written(build, fragments, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # a default results/ folder would land here, and be seen
    argv = [str(a) for a in build(tmp_path)]
    capfd.readouterr()
    before = _files(tmp_path)
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own exit: a failure here, reported by _check
        status = e.code
    out, err = capfd.readouterr()
    _check(status, out, err, fragments, before, _files(tmp_path))


def test_there_are_at_least_100_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 100


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_hostile_input_in_a_real_process(case_id, tmp_path):
    _, build, fragments = next(c for c in CASES if c[0] == case_id)
    argv = [str(a) for a in build(tmp_path)]
    before = _files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "llmsim", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    _check(proc.returncode, proc.stdout, proc.stderr, fragments, before, _files(tmp_path))


# ------------------------------------------------------------------------------------ warned, not refused
def test_max_model_len_above_the_models_context_is_a_note_not_an_error(tmp_path, capsys):
    assert main(["validate", scenario_file(tmp_path, {"engine.max_model_len": 8192})]) == 0
    out = capsys.readouterr().out
    assert "note:" in out and "max_model_len=8,192 is above llama-2-7b's context length of 4,096" in out
    assert main(["run", scenario_file(tmp_path, {"engine.max_model_len": 8192}), "--quiet", "--out", str(tmp_path / "r")]) == 0
    notes = yaml.safe_load((tmp_path / "r" / "summary.json").read_text())["notes"]
    assert any("above llama-2-7b's context length" in n for n in notes)
