"""Tests of the cost model: catalog, hardware profiles, analytic physics (docs/cost-model.md §4),
the vectorised decode path, the constant model and the KV capacity derivation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from helpers import check_run_pricer

from llmsim.costmodel import (
    AnalyticCostModel,
    BatchShape,
    ConstantCostModel,
    CostModel,
    derive_kv_capacity_tokens,
    list_models,
    list_profiles,
    load_model,
    load_profile,
)
from llmsim.costmodel.profile import REPO_PROFILES_DIR
from llmsim.errors import LlmsimError

# Parameter counts as Hugging Face reports them (model.num_parameters()).
KNOWN_PARAMS = {
    "llama-2-7b": 6.738e9,
    "llama-2-13b": 13.016e9,
    "llama-2-70b": 68.977e9,
    "llama-3.1-8b": 8.030e9,
    "llama-3.1-70b": 70.554e9,
    "mistral-7b": 7.242e9,
    "qwen2.5-7b": 7.616e9,
    "mixtral-8x7b": 46.703e9,
}
PROFILES = ("a100-80g-sxm", "h100-80g-sxm")


def decode(batch: int, context: int) -> BatchShape:
    return BatchShape(
        decode_seqs=batch, decode_context_sum_tokens=batch * context, decode_context_max_tokens=context
    )


def prefill(tokens: int) -> BatchShape:
    return BatchShape(prefill_chunk_tokens=(tokens,), prefill_prefix_tokens=(0,))


@pytest.fixture(scope="module")
def llama7b():
    return load_model("llama-2-7b")


@pytest.fixture(scope="module", params=PROFILES)
def cm7b(request, llama7b):
    return AnalyticCostModel(llama7b, load_profile(request.param))


# ----- catalog -----


def test_catalog_holds_the_documented_models():
    assert set(list_models()) == set(KNOWN_PARAMS)


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_catalog_model_loads_and_param_count_matches_known_value_within_1_percent(name):
    model = load_model(name)
    assert model.name == name
    assert model.num_params == pytest.approx(KNOWN_PARAMS[name], rel=0.01)


def test_catalog_architecture_values_match_hf_configs():
    m = load_model("llama-2-70b")
    assert (m.num_hidden_layers, m.hidden_size, m.intermediate_size) == (80, 8192, 28672)
    assert (m.num_attention_heads, m.num_key_value_heads, m.head_dim) == (64, 8, 128)
    m = load_model("llama-3.1-8b")
    assert (m.vocab_size, m.num_key_value_heads, m.intermediate_size) == (128256, 8, 14336)
    assert m.max_position_embeddings == 131072
    m = load_model("qwen2.5-7b")
    assert (m.hidden_size, m.intermediate_size, m.num_hidden_layers) == (3584, 18944, 28)
    assert (m.num_attention_heads, m.num_key_value_heads, m.vocab_size, m.qkv_bias) == (28, 4, 152064, True)
    m = load_model("mixtral-8x7b")
    assert (m.num_local_experts, m.num_experts_per_tok, m.intermediate_size) == (8, 2, 14336)
    assert m.num_active_params_per_token == pytest.approx(12.9e9, rel=0.02)


def test_kv_bytes_per_token_shards_heads_and_replicates_when_tp_exceeds_kv_heads():
    m = load_model("llama-2-70b")  # 8 KV heads, head_dim 128, 80 layers, 2 bytes
    assert m.kv_bytes_per_token_per_gpu(1) == 2 * 80 * 8 * 128 * 2
    assert m.kv_bytes_per_token_per_gpu(8) == 2 * 80 * 1 * 128 * 2
    assert load_model("qwen2.5-7b").kv_heads_per_gpu(8) == 1  # 4 KV heads: replicated at TP 8


def test_weight_bytes_per_gpu_shrinks_with_tensor_parallel():
    m = load_model("llama-2-70b")
    assert m.weight_bytes_per_gpu(1) == pytest.approx(m.weight_bytes, rel=1e-9)
    assert m.weight_bytes_per_gpu(4) < m.weight_bytes / 3.9


def test_unknown_model_name_raises_one_line_error_listing_known_names():
    with pytest.raises(LlmsimError) as info:
        load_model("llama-2-7")
    message = str(info.value)
    assert "\n" not in message and "llama-2-7b" in message and "did you mean" in message


def test_model_loads_from_a_yaml_path(tmp_path):
    path = tmp_path / "custom.yaml"
    data = load_model("llama-2-7b").model_dump(exclude_defaults=True)
    data["name"] = "custom"
    path.write_text(yaml.safe_dump(data))
    assert load_model(path).num_params == load_model("llama-2-7b").num_params


# ----- hardware profiles -----


def test_every_shipped_profile_validates_and_says_how_it_was_made():
    """Spec-sheet templates are analytic with documented (unmeasured) comm defaults; a profile
    measured by calibrate-hardware names its software and timer; one imported from published
    measurements (tests/test_import_profile.py) is measured-public and names its source."""
    names = [p.stem for p in REPO_PROFILES_DIR.glob("*.yaml")]
    assert set(PROFILES) <= set(names) and set(names) <= set(list_profiles())
    for name in names:
        profile = load_profile(name)
        assert profile.hardware.name == name
        if profile.calibration.fidelity == "analytic":
            assert profile.comm.measured is False
        elif profile.calibration.fidelity == "measured-public":
            assert profile.calibration.source and profile.calibration.timer, name
            assert profile.gemm is not None and profile.gemm.shapes, name
        else:  # a profile measured by calibrate-hardware names its software and timer
            assert profile.calibration.fidelity == "measured", name
            assert profile.calibration.torch_version and profile.calibration.timer, name
            assert profile.has_tables, name


def test_profile_loads_from_a_path_and_from_search_dirs(tmp_path):
    source = REPO_PROFILES_DIR / "h100-80g-sxm.yaml"
    (tmp_path / "my-gpu.yaml").write_text(source.read_text())
    assert load_profile(tmp_path / "my-gpu.yaml").hardware.peak_bf16_tflops == 989.0
    assert load_profile("my-gpu", search_dirs=[tmp_path]).hardware.hbm_gb_per_s == 3350.0
    assert "my-gpu" in list_profiles([tmp_path])


def test_unknown_key_in_profile_yaml_raises_error_naming_key_and_file(tmp_path):
    data = yaml.safe_load((REPO_PROFILES_DIR / "a100-80g-sxm.yaml").read_text())
    data["efficiency"]["gemm_magic"] = 0.5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LlmsimError) as info:
        load_profile(path)
    message = str(info.value)
    assert "gemm_magic" in message and str(path) in message and "\n" not in message


def test_invalid_profile_value_raises_one_line_error(tmp_path):
    data = yaml.safe_load((REPO_PROFILES_DIR / "a100-80g-sxm.yaml").read_text())
    data["efficiency"]["gemm_compute"] = 1.5  # a fraction of peak cannot exceed 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LlmsimError, match="gemm_compute") as info:
        load_profile(path)
    assert "\n" not in str(info.value)


def test_unknown_profile_name_raises_error_listing_known_profiles():
    with pytest.raises(LlmsimError, match="a100-80g-sxm"):
        load_profile("b200-nonexistent")


# ----- analytic physics (docs/cost-model.md §4) -----


def test_analytic_model_satisfies_the_cost_model_protocol(cm7b):
    assert isinstance(cm7b, CostModel)
    assert isinstance(ConstantCostModel(0.01), CostModel)


def kernels_s(cm, shape: BatchShape) -> float:
    """The step less its engine overheads (CPU time, the same on every GPU)."""
    return cm.step_time_s(shape) - cm.breakdown(shape)["overheads"]


def test_decode_batch1_is_above_bandwidth_floor_at_60_to_90_percent_efficiency(cm7b):
    shape = decode(1, 512)
    predicted = kernels_s(cm7b, shape)
    floor = cm7b.floors(shape)["bandwidth_floor_s"]
    # The floor streams ~13.2 GB of weights (LM head included, embedding table not).
    assert cm7b.floors(shape)["weight_bytes_per_gpu"] == pytest.approx(13.2e9, rel=0.01)
    assert predicted > floor
    assert 0.60 <= floor / predicted <= 0.90


def test_prefill_2048_is_above_flop_floor_with_45_to_75_percent_mfu(cm7b):
    shape = prefill(2048)
    predicted = kernels_s(cm7b, shape)
    floors = cm7b.floors(shape)
    assert floors["flops_per_gpu"] == pytest.approx(26.5e12 + 1.1e12, rel=0.02)  # matmuls + attention
    assert predicted > floors["flop_floor_s"]
    assert 0.45 <= floors["flop_floor_s"] / predicted <= 0.75


def test_h100_over_a100_speedup_is_1_5_to_1_8_for_decode_and_2_5_to_3_5_for_prefill(llama7b):
    a100 = AnalyticCostModel(llama7b, load_profile("a100-80g-sxm"))
    h100 = AnalyticCostModel(llama7b, load_profile("h100-80g-sxm"))
    for shape in (decode(1, 512), decode(32, 1024), decode(128, 1024)):
        assert 1.5 <= kernels_s(a100, shape) / kernels_s(h100, shape) <= 1.8
    for tokens in (512, 2048, 4096):
        assert 2.5 <= kernels_s(a100, prefill(tokens)) / kernels_s(h100, prefill(tokens)) <= 3.5


def test_step_time_is_monotone_in_prefill_tokens_decode_batch_and_context(cm7b):
    prefill_times = [cm7b.step_time_s(prefill(t)) for t in range(1, 8193, 97)]
    assert np.all(np.diff(prefill_times) >= 0)
    batch_times = [cm7b.step_time_s(decode(b, 1024)) for b in range(1, 513, 3)]
    assert np.all(np.diff(batch_times) >= 0)
    context_times = [cm7b.step_time_s(decode(16, c)) for c in range(1, 16384, 101)]
    assert np.all(np.diff(context_times) >= 0)
    chunk_times = [
        cm7b.step_time_s(BatchShape((512,), (p,), 8, 8 * 700, 700)) for p in range(0, 8192, 256)
    ]
    assert np.all(np.diff(chunk_times) >= 0)


def test_decode_gemms_are_bandwidth_bound_and_nearly_flat_from_batch_1_to_8(cm7b):
    gemm_1 = cm7b.breakdown(decode(1, 1024))["gemm"]
    gemm_8 = cm7b.breakdown(decode(8, 1024))["gemm"]
    assert gemm_1 <= gemm_8 <= 1.03 * gemm_1


def test_prefill_4096_gemms_are_compute_bound_and_scale_linearly(cm7b):
    gemm_2048 = cm7b.breakdown(prefill(2048))["gemm"]
    gemm_4096 = cm7b.breakdown(prefill(4096))["gemm"]
    assert 1.95 <= gemm_4096 / gemm_2048 <= 2.0
    floors = cm7b.floors(prefill(4096))
    assert cm7b.step_time_s(prefill(4096)) > floors["flop_floor_s"] > floors["bandwidth_floor_s"]


def test_long_prefill_attention_roughly_quadruples_when_length_doubles(cm7b):
    attn_8k = cm7b.breakdown(prefill(8192))["attention"]
    attn_16k = cm7b.breakdown(prefill(16384))["attention"]
    assert 3.8 <= attn_16k / attn_8k <= 4.1


def test_tensor_parallel_4_cuts_gemm_time_to_at_least_a_quarter_and_adds_communication():
    model = load_model("llama-2-70b")
    for name in PROFILES:
        profile = load_profile(name)
        tp1, tp4 = AnalyticCostModel(model, profile, 1), AnalyticCostModel(model, profile, 4)
        for shape in (decode(32, 1024), prefill(2048)):
            b1, b4 = tp1.breakdown(shape), tp4.breakdown(shape)
            assert b1["gemm"] / 4 <= b4["gemm"] < b1["gemm"]
            assert b1["communication"] == 0.0 < b4["communication"]
            assert tp4.step_time_s(shape) < tp1.step_time_s(shape)


def test_breakdown_sums_to_step_time_for_mixed_shapes(cm7b):
    shape = BatchShape((300, 512), (0, 1024), 40, 40 * 900, 2000)
    assert sum(cm7b.breakdown(shape).values()) == pytest.approx(cm7b.step_time_s(shape), rel=1e-12)
    assert cm7b.step_time_s(BatchShape()) == 0.0


def test_prefix_defaults_to_zero_when_omitted(cm7b):
    assert cm7b.step_time_s(BatchShape((700,))) == cm7b.step_time_s(BatchShape((700,), (0,)))


@pytest.mark.parametrize("model_name,tp", [("llama-2-7b", 1), ("llama-2-70b", 4), ("mixtral-8x7b", 2)])
def test_a_decode_run_is_priced_as_its_steps_one_by_one(model_name, tp):
    cm = AnalyticCostModel(load_model(model_name), load_profile("h100-80g-sxm"), tp)
    for seqs, ctx_sum, ctx_max, steps in ((1, 5, 5, 50), (37, 37 * 800, 1500, 300), (256, 10**6, 9000, 7)):
        scalar = [cm.step_time_s(BatchShape((), (), seqs, ctx_sum + j * seqs, ctx_max + j)) for j in range(steps)]
        assert len(set(scalar)) > 1 or seqs == 1  # the context grows: the steps differ (1 sequence: attention at its floor)
        check_run_pricer(cm, seqs, ctx_sum, ctx_max, scalar)  # bit for bit: fast-forward relies on it
    assert cm.step_time_s(BatchShape()) == 0.0
    check_run_pricer(cm, 0, 0, 0, [0.0, 0.0])


def test_a_model_without_its_own_decode_formula_is_priced_through_step_time_s():
    class Quadratic:  # a cost model of the two-method contract only
        def step_time_s(self, shape):
            return 1e-3 + 1e-9 * shape.decode_context_sum_tokens ** 2 + 1e-6 * shape.decode_context_max_tokens

        def swap_time_s(self, num_bytes_per_gpu):
            return 0.0

    cm = Quadratic()
    check_run_pricer(cm, 3, 300, 120, [cm.step_time_s(BatchShape((), (), 3, 300 + 3 * j, 120 + j)) for j in range(40)])


def test_decode_attention_takes_the_compute_bound_branch_where_it_is_larger():
    # a GPU with almost no FLOPs: decode attention is compute bound
    profile = load_profile("h100-80g-sxm")
    slow = profile.model_copy(update={"hardware": profile.hardware.model_copy(update={"peak_bf16_tflops": 0.001})})
    cm = AnalyticCostModel(load_model("llama-2-7b"), slow)
    seqs, ctx_sum, ctx_max = 8, 8 * 700, 900
    moved = cm._kv_bytes_per_token_layer * ctx_sum / cm._attn_bytes_per_s
    compute = ctx_sum * cm._attn_flops_per_pair / cm._attn_flops_per_s
    assert compute > moved  # the premise
    # the smooth roofline: launch + (compute^2 + moved^2)^(1/2), above the compute bound
    moved += seqs * cm._q_bytes_per_token / cm._attn_bytes_per_s  # the queries read and the outputs written
    assert cm._decode_attention_s(seqs, ctx_sum) == pytest.approx(cm._launch_s + math.hypot(compute, moved), rel=1e-12)
    assert cm._decode_attention_s(seqs, ctx_sum) > compute
    check_run_pricer(cm, seqs, ctx_sum, ctx_max, [cm.step_time_s(BatchShape((), (), seqs, ctx_sum + j * seqs, ctx_max + j)) for j in range(20)])


@pytest.mark.parametrize("roofline_p", [2.0, 1.5, math.inf])
@pytest.mark.parametrize("kernel_floor_us", [None, 500.0])
def test_decode_step_formula_is_the_kernel_roofline_bit_for_bit(roofline_p, kernel_floor_us):
    # decode_step_fn binds the attention roofline's constants into one closure (analytic.py); it
    # must give the very bits of the unbound composition: fixed part + layers x _kernel_s(...)
    profile = load_profile("h100-80g-sxm")
    update = {"roofline_p": roofline_p}
    if kernel_floor_us is not None:  # so large that the floor wins at small contexts
        update["kernel_floor_us"] = kernel_floor_us
    cm = AnalyticCostModel(load_model("llama-2-7b"), profile.model_copy(update={"efficiency": profile.efficiency.model_copy(update=update)}))
    rng = np.random.default_rng(7)
    floored = 0
    for seqs in (1, 3, 64, 255):
        fn = cm.decode_step_fn(seqs)
        for ctx_sum in [seqs, seqs * 17] + [int(x) for x in rng.integers(seqs, seqs * 4096, 50)]:
            attention = cm._kernel_s(cm._launch_s, ctx_sum * cm._attn_flops_per_pair / cm._attn_flops_per_s,
                                     (ctx_sum * cm._kv_bytes_per_token_layer + seqs * cm._q_bytes_per_token) / cm._attn_bytes_per_s)
            floored += attention == cm._floor_s
            assert cm._decode_attention_s(seqs, ctx_sum) == attention
            assert fn(ctx_sum, 1) == cm._decode_fixed_s(seqs) + cm._layers * attention
            assert cm.step_time_s(BatchShape((), (), seqs, ctx_sum, 1)) == fn(ctx_sum, 1)
        # the run pricer (the loop inside the formula's closure, decode_run_fn) against the steps
        # priced one by one and summed in order: it may be removed without changing a result
        check_run_pricer(cm, seqs, seqs * 17, 1, [fn(seqs * 17 + j * seqs, 1 + j) for j in range(20)])
    assert (floored > 0) == (kernel_floor_us is not None)  # both branches of the floor are checked


def test_moe_decode_reads_fewer_expert_weights_than_prefill():
    cm = AnalyticCostModel(load_model("mixtral-8x7b"), load_profile("h100-80g-sxm"), 2)
    assert cm.floors(decode(1, 512))["weight_bytes_per_gpu"] < 0.4 * cm.floors(prefill(2048))["weight_bytes_per_gpu"]
    assert cm.step_time_s(decode(1, 512)) < cm.step_time_s(decode(64, 512))


def test_swap_time_is_bytes_over_host_link_bandwidth(cm7b):
    link = cm7b.profile.hardware.host_link_gb_per_s * 1e9
    assert cm7b.swap_time_s(4e9) == pytest.approx(4e9 / link)


def test_tensor_parallel_that_does_not_divide_heads_raises():
    with pytest.raises(LlmsimError, match="tensor_parallel"):
        AnalyticCostModel(load_model("llama-2-7b"), load_profile("a100-80g-sxm"), 3)


# ----- constant model -----


def test_constant_model_charges_fixed_plus_per_token_time():
    cm = ConstantCostModel(0.02, per_token_s=0.001)
    assert cm.step_time_s(BatchShape((100,), (0,), 5, 500, 100)) == pytest.approx(0.02 + 0.105)
    assert cm.step_time_s(BatchShape()) == 0.0
    assert cm.step_time_s(BatchShape((), (), 5, 500, 100)) == pytest.approx(0.025)
    check_run_pricer(cm, 5, 500, 100, [cm.step_time_s(BatchShape((), (), 5, 500, 100))] * 6)
    check_run_pricer(cm, 0, 0, 0, [0.0])
    assert cm.swap_time_s(1e9) == 0.0
    assert ConstantCostModel(0.01, host_link_gb_per_s=10.0).swap_time_s(1e9) == pytest.approx(0.1)
    with pytest.raises(LlmsimError):
        ConstantCostModel(-1.0)


# ----- KV capacity -----


def test_kv_capacity_of_llama2_7b_on_h100_is_100k_to_125k_tokens_in_whole_blocks(llama7b):
    capacity = derive_kv_capacity_tokens(llama7b, load_profile("h100-80g-sxm"), 1, 0.9, 2.0, 16)
    assert 100_000 <= capacity <= 125_000
    assert capacity % 16 == 0


def test_kv_capacity_grows_with_tensor_parallel_per_replica_memory():
    model, profile = load_model("llama-2-70b"), load_profile("a100-80g-sxm")
    tp4 = derive_kv_capacity_tokens(model, profile, 4, 0.9, 2.0, 16)
    tp8 = derive_kv_capacity_tokens(model, profile, 8, 0.9, 2.0, 16)
    assert 0 < tp4 < tp8


def test_llama2_70b_at_tp1_does_not_fit_and_error_mentions_tensor_parallel():
    with pytest.raises(LlmsimError) as info:
        derive_kv_capacity_tokens(load_model("llama-2-70b"), load_profile("h100-80g-sxm"), 1, 0.9, 2.0, 16)
    message = str(info.value)
    assert "tensor_parallel" in message and "gpu_memory_fraction" in message and "kv_capacity_tokens" in message
    assert "\n" not in message
