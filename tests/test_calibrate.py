"""Tests of the calibration microbenchmarks (llmsim.costmodel.calibrate) on CPU.

CPU timings are noisy, so these check the plan (hand-computed shapes), the schema, positivity and
coarse monotonicity, never values (docs/cost-model.md §3). The CUDA paths (events, graphs, L2
rotation, flash-attn, copies, NCCL) need a GPU and are not exercised here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmsim.costmodel import calibrate, load_model
from llmsim.costmodel.calibrate import BenchPlan, plan_for, require_torch, run_microbenchmarks, torch_available
from llmsim.costmodel.measurements import RawMeasurements
from llmsim.errors import LlmsimError

# Llama-2-7B: hidden 4096, 32 heads of 128 (MHA), intermediate 11008, vocabulary 32000.
LLAMA2_7B_TP1 = [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008), (32000, 4096)]
LLAMA2_7B_TP2 = [(6144, 4096), (4096, 2048), (11008, 4096), (4096, 5504), (16000, 4096)]


def tiny_plan() -> BenchPlan:
    return BenchPlan(
        gemm_shapes=[(256, 512), (1024, 1024)],
        gemm_tokens=[1, 8, 64],
        prefill_heads=[(8, 2, 64), (4, 4, 32)],  # one GQA, one MHA configuration
        prefill_tokens=[32, 128],
        chunk_points=[(32, 64)],
        decode_batches=[1, 4],
        decode_contexts=[64, 256],
        elementwise_bytes=[4096, 1 << 20],
        copy_bytes=[1 << 20],  # CUDA only: ignored on CPU
        tps=[1, 2],
        allreduce_bytes=[1 << 16],
    )


@pytest.fixture(scope="module")
def tiny_run() -> tuple[RawMeasurements, list[tuple[int, int, str]]]:
    calls: list[tuple[int, int, str]] = []
    raw = run_microbenchmarks(tiny_plan(), device="cpu", progress=lambda d, t, label: calls.append((d, t, label)))
    return raw, calls


def test_torch_is_installed_for_the_tests():
    assert torch_available()


def test_importing_calibrate_does_not_import_torch():
    code = "import sys, llmsim.costmodel.calibrate, llmsim.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_require_torch_explains_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert not torch_available()
    with pytest.raises(LlmsimError, match=r"pip install torch==2\.13\.0") as info:
        require_torch()
    assert "\n" not in str(info.value) and "llmsim[calibrate]" in str(info.value)


def test_gemm_shapes_of_llama2_7b_by_tp():
    plan = plan_for([load_model("llama-2-7b")], [1, 2], quick=False, device="cuda")
    assert plan.gemm_shapes == LLAMA2_7B_TP1 + LLAMA2_7B_TP2
    assert plan.prefill_heads == [(32, 32, 128), (16, 16, 128)]
    assert plan.tps == [1, 2]
    assert len(plan.gemm_tokens) == 20 and plan.gemm_tokens[0] == 1 and plan.gemm_tokens[-1] == 8192
    # Llama-2 has a 4k context: no longer prefill, chunk or decode points.
    assert max(plan.prefill_tokens) == 4096 and max(plan.decode_contexts) == 4096
    assert all(c + p <= 4096 for c, p in plan.chunk_points)


def test_plan_deduplicates_shapes_and_heads():
    llama = load_model("llama-2-7b")
    assert plan_for([llama, llama], [1, 1, 2], quick=True, device="cpu").gemm_shapes == LLAMA2_7B_TP1 + LLAMA2_7B_TP2
    # Mistral-7B and Llama-3.1-8B differ only in vocabulary: they share all but the LM head.
    plan = plan_for([load_model("mistral-7b"), load_model("llama-3.1-8b")], [1], quick=True, device="cpu")
    assert plan.gemm_shapes == [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (32000, 4096), (128256, 4096)]
    assert plan.prefill_heads == [(32, 8, 128)]


def test_plan_for_moe_and_unshardable_tp():
    plan = plan_for([load_model("mixtral-8x7b")], [2], quick=True, device="cuda")
    assert (8, 4096) in plan.gemm_shapes  # router
    assert (14336, 4096) in plan.gemm_shapes and (4096, 7168) in plan.gemm_shapes  # one expert at TP 2
    # Qwen2.5-7B's 28 heads do not split over 8 GPUs: that pair is left out, Llama's is kept.
    plan = plan_for([load_model("qwen2.5-7b"), load_model("llama-2-7b")], [1, 8], quick=True, device="cuda")
    assert plan.prefill_heads == [(28, 4, 128), (32, 32, 128), (4, 4, 128)]
    assert len(plan.gemm_shapes) == 15 and (3 * 4 * 128, 4096) in plan.gemm_shapes  # Llama's qkv at TP 8
    assert plan.tps == [1, 8]
    with pytest.raises(LlmsimError, match="tensor_parallel=8"):
        plan_for([load_model("qwen2.5-7b")], [8], quick=True, device="cuda")


def test_quick_cpu_grid_is_small():
    quick = plan_for([load_model("llama-2-7b")], [1], quick=True, device="cpu")
    assert 4 <= len(quick.gemm_tokens) <= 8 and max(quick.gemm_tokens) <= 64
    assert quick.copy_bytes == [] and quick.allreduce_bytes == []


def test_tiny_cpu_run_fills_every_table(tiny_run):
    raw, _ = tiny_run
    assert raw.device == "cpu" and raw.dtype == "float32" and raw.device_name
    assert raw.torch_version and raw.cuda_version is None and raw.driver_version is None
    assert "perf_counter" in raw.timer and raw.repetitions == 3 and raw.duration_s > 0
    assert {(p.n, p.k, p.tokens) for p in raw.gemm} == {
        (n, k, t) for n, k in [(256, 512), (1024, 1024)] for t in [1, 8, 64]
    }
    assert len(raw.prefill_attention) == 2 * 3 and len(raw.decode_attention) == 2 * 2 * 2
    assert {(p.chunk_tokens, p.prefix_tokens) for p in raw.prefill_attention} == {(32, 0), (128, 0), (32, 64)}
    assert all(p.batch == 1 for p in raw.prefill_attention)
    assert {(p.q_heads, p.kv_heads, p.head_dim) for p in raw.decode_attention} == {(8, 2, 64), (4, 4, 32)}
    # RMSNorm then SiLU-and-mul per requested size (4 KiB, 1 MiB), each moving about that many bytes
    sizes = [p.num_bytes for p in raw.elementwise]
    assert len(sizes) == 4
    for requested, got in zip([4096, 4096, 1 << 20, 1 << 20], sizes):
        assert 0.6 * requested <= got <= 1.5 * requested, (requested, got)
    assert raw.host_to_device == [] and raw.device_to_host == [] and raw.allreduce == []
    everything = raw.gemm + raw.prefill_attention + raw.decode_attention + raw.elementwise
    assert all(p.seconds > 0 for p in everything)


def test_tiny_cpu_run_records_attention_backends(tiny_run):
    backends = tiny_run[0].attention_backends
    assert any(b.startswith("prefill: sdpa") and "enable_gqa" in b for b in backends)
    assert any(b.startswith("chunked prefill: sdpa") for b in backends)
    assert any(b.startswith("decode: sdpa") and "folded" in b for b in backends)


def test_gemm_time_does_not_fall_with_8x_tokens(tiny_run):
    # Generous: CPU timings are noisy, but 8x and 64x the rows must not run much faster.
    times = {(p.n, p.k, p.tokens): p.seconds for p in tiny_run[0].gemm}
    for n, k in [(256, 512), (1024, 1024)]:
        assert times[n, k, 8] > times[n, k, 1] / 3
        assert times[n, k, 64] > times[n, k, 1] / 2
    assert times[1024, 1024, 64] > times[256, 512, 64]  # 8x the FLOPs


def test_progress_counts_every_point(tiny_run):
    _, calls = tiny_run
    total = 6 + 6 + 8 + 2 * 2  # elementwise: RMSNorm and SiLU-and-mul per size
    assert [d for d, _, _ in calls] == list(range(1, total + 1))
    assert all(t == total for _, t, _ in calls)
    assert calls[0][2].startswith("gemm") and any(label.startswith("decode") for _, _, label in calls)


def test_decode_points_over_the_memory_budget_are_skipped(monkeypatch):
    budget = 2 * 1 * 64 * 2 * 64 * 4  # K and V of one sequence of 64 tokens, 2 KV heads of 64, fp32
    monkeypatch.setattr(calibrate, "_memory_budget", lambda torch, dev: budget)
    plan = tiny_plan()
    plan.gemm_shapes, plan.prefill_heads, plan.elementwise_bytes = [], [(8, 2, 64)], []
    calls: list[int] = []
    raw = run_microbenchmarks(plan, device="cpu", progress=lambda d, t, label: calls.append(d))
    assert [(p.batch, p.context_tokens) for p in raw.decode_attention] == [(1, 64)]
    assert calls[-1] == 3 + 4  # skipped points still advance the progress bar


def test_folded_decode_query_matches_grouped_attention():
    # The SDPA decode fallback folds the query heads sharing a KV head into the query-length axis;
    # check that this is the same function as GQA attention with one query token.
    torch = require_torch()
    batch, q_heads, kv_heads, context, head_dim = 3, 8, 2, 40, 16
    q = torch.randn(batch, q_heads, 1, head_dim, dtype=torch.float64)
    k, v = (torch.randn(batch, kv_heads, context, head_dim, dtype=torch.float64) for _ in range(2))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    ref = sdpa(q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1))
    folded = sdpa(q.view(batch, kv_heads, q_heads // kv_heads, head_dim), k, v)
    assert torch.allclose(folded.reshape(batch, q_heads, 1, head_dim), ref)


def test_bad_device_and_dtype_are_user_errors():
    torch = require_torch()
    with pytest.raises(LlmsimError, match="unknown calibration device"):
        run_microbenchmarks(tiny_plan(), device="tpu")
    with pytest.raises(LlmsimError, match="unsupported calibration dtype"):
        run_microbenchmarks(tiny_plan(), device="cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(LlmsimError, match="--device cpu"):
            run_microbenchmarks(tiny_plan(), device="cuda")


@pytest.mark.slow
def test_quick_cpu_calibration_of_llama2_7b():
    plan = plan_for([load_model("llama-2-7b")], [1], quick=True, device="cpu")
    raw = run_microbenchmarks(plan, device="cpu")
    assert len(raw.gemm) == len(plan.gemm_shapes) * len(plan.gemm_tokens) == 5 * len(plan.gemm_tokens)
    assert len(raw.prefill_attention) == len(plan.prefill_tokens) + len(plan.chunk_points)
    assert len(raw.decode_attention) == len(plan.decode_batches) * len(plan.decode_contexts)
    assert len(raw.elementwise) == 2 * len(plan.elementwise_bytes)
    # Its duration (about 30 s on 2 idle cores) is not asserted: a timed unit test fails on a busy
    # machine; the README quotes the figure instead.


def test_gpu_only_engine_kernels_are_skipped_on_cpu_and_still_counted():
    """The one switch is BenchEnv.cuda: on CPU the varlen kernels (packed prefill, paged and
    mixed-length decode), the clock warm-up and NVML readings do nothing, and the points they
    would have measured still advance the progress bar."""
    plan = tiny_plan()
    plan.gemm_shapes, plan.prefill_tokens, plan.chunk_points, plan.elementwise_bytes = [], [32], [], []
    plan.decode_batches, plan.decode_contexts = [1], [64]
    plan.packed_prefill, plan.mixed_decode = [(2, 16)], ([4], 64)
    calls: list[tuple[int, int, str]] = []
    raw = run_microbenchmarks(plan, device="cpu", progress=lambda d, t, label: calls.append((d, t, label)))
    assert [p.batch for p in raw.prefill_attention] == [1, 1]  # the packed (batch 2) point was skipped
    assert raw.decode_mixed == [] and raw.gpu_state == []
    assert any("packed prefill" in label and "skipped" in label for _, _, label in calls)
    assert any("mixed decode" in label and "skipped" in label for _, _, label in calls)
    total = calls[-1][1]
    assert [d for d, _, _ in calls] == list(range(1, total + 1)) == list(range(1, 2 * (1 + 1 + 1 + 1) + 1))


def test_norm_and_activation_points_move_the_bytes_they_say():
    torch = require_torch()
    from llmsim.costmodel import bench_engine
    from llmsim.costmodel.bench_kernels import BenchEnv, Timer

    env = BenchEnv(torch, torch.device("cpu"), torch.float32, Timer(torch, cuda=False, samples=1, warmup=1), 0, 1 << 30)
    norm, act = bench_engine.bench_norm_activation(env, [3 * 4096 * 4 * 8])  # 8 rows of a 4096-wide hidden state
    assert norm.num_bytes == (2 * 8 * 4096 + 4096) * 4 and act.num_bytes == 3 * 8 * 4096 * 4
    assert bench_engine.varlen(env) is None and bench_engine.gpu_state(env) == "" and bench_engine.prefer_fa3(env) == ""


def test_fused_moe_is_timed_as_grouped_gemms_and_sets_the_profiles_moe_efficiency():
    import datetime
    from pathlib import Path

    from llmsim.costmodel import load_profile
    from llmsim.costmodel.fit import fit_profile
    from llmsim.costmodel.fit_moe import dense_price_s

    model = load_model(Path(__file__).parent / "data" / "tiny-moe-model.yaml")  # 4 experts, top 2, 64 x 128
    plan = plan_for([model], [1], quick=True, device="cpu")
    assert plan.moe_shapes == [(4, 2, 64, 128)] and plan.moe_tokens == [1, 16]
    raw = run_microbenchmarks(plan, device="cpu")
    assert [(p.tokens, p.experts_hit) for p in raw.moe_gemm][0] == (1, 2)  # one token reaches its top 2
    assert all(p.seconds > 0 and 1 <= p.experts_hit <= 4 for p in raw.moe_gemm)
    profile = fit_profile(raw, load_profile("h100-80g-sxm"), [model], [1], datetime.date(2026, 12, 4), "tiny-cpu")
    ratios = sorted(dense_price_s(profile.gemm, p.experts_hit, p.tokens * p.top_k, p.hidden, p.intermediate) / p.seconds
                    for p in raw.moe_gemm)
    assert profile.efficiency.moe_gemm_efficiency == pytest.approx(min(1.0, max(0.05, sum(ratios) / 2)))  # median of 2


def test_table_model_divides_expert_gemms_by_the_moe_efficiency():
    from llmsim.costmodel import BatchShape, load_profile
    from llmsim.costmodel.tables import cost_model_for

    mixtral, profile = load_model("mixtral-8x7b"), load_profile("nvidia-h200")
    shape = BatchShape(decode_seqs=8, decode_context_sum_tokens=8 * 1025, decode_context_max_tokens=1025)

    def parts(eff):
        eff_section = profile.efficiency.model_copy(update={"moe_gemm_efficiency": eff})
        return cost_model_for(mixtral, profile.model_copy(update={"efficiency": eff_section}), 1).breakdown(shape)

    dense, half, quarter = parts(1.0), parts(0.5), parts(0.25)
    # Only the expert GEMMs scale with 1 / efficiency: GEMM time is attention-projection/router/LM
    # head time A plus expert time X / eff, so the three points lie on one line in 1 / eff.
    x = half["gemm"] - dense["gemm"]
    assert x > 0 and quarter["gemm"] - half["gemm"] == pytest.approx(2 * x)
    a = dense["gemm"] - x
    assert 0 < a < x  # at batch 8 Mixtral's step is mostly expert weights
    assert half["attention"] == dense["attention"] and half["elementwise"] == dense["elementwise"]
