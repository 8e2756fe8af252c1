"""Tests of the cost-model terms of issue 23: engine-overhead presets (per step, per sequence,
sampling over the vocabulary), the smooth roofline with per-kernel launch latency, per-TP
all-reduce fits and the fused-MoE efficiency (llmsim/costmodel/overheads.py, roofline.py)."""

from __future__ import annotations

import json
import math
import typing

import numpy as np
import pytest
import yaml

from llmsim.cli import main
from llmsim.config import AnalyticCostConfig
from llmsim.costmodel import AnalyticCostModel, BatchShape, load_model, load_profile
from llmsim.costmodel.builders import analytic
from llmsim.costmodel.overheads import PRESETS
from llmsim.costmodel.profile import REPO_PROFILES_DIR, Overheads
from llmsim.costmodel.roofline import allreduce_params, smooth_max
from llmsim.errors import LlmsimError


def decode(batch: int, context: int) -> BatchShape:
    return BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * context, decode_context_max_tokens=context)


def with_preset(profile, **overheads):
    return profile.model_copy(update={"overheads": Overheads(**overheads)})


@pytest.fixture(scope="module")
def h100():
    return load_profile("h100-80g-sxm")


@pytest.fixture(scope="module")
def llama7b():
    return load_model("llama-2-7b")


# ----- engine overheads -----


@pytest.mark.parametrize("batch", [1, 37, 256])
def test_presets_change_the_step_by_their_documented_step_sequence_and_sampling_terms(h100, llama7b, batch):
    shape = decode(batch, 700)
    kernels = AnalyticCostModel(llama7b, with_preset(h100, preset="kernels-only"))
    for name in ("cuda-graph", "eager"):
        cm = AnalyticCostModel(llama7b, with_preset(h100, preset=name))
        o = PRESETS[name]
        sampling_s = cm._elem_s(batch * llama7b.vocab_size * o.sampling_bytes_per_logit)  # one elementwise kernel
        expected = o.step_s + o.per_seq_s * batch + sampling_s
        assert cm.step_time_s(shape) - kernels.step_time_s(shape) == pytest.approx(expected, rel=1e-9)
        assert cm.breakdown(shape)["overheads"] == pytest.approx(expected, rel=1e-12)
        assert cm.overheads.name == name
    assert kernels.breakdown(shape)["overheads"] == 0.0
    assert PRESETS["eager"].step_s > PRESETS["cuda-graph"].step_s >= 0.0005  # several ms vs ~0.8 ms


def test_sampling_grows_with_batch_and_vocabulary(h100, llama7b):
    cm = AnalyticCostModel(llama7b, h100)
    over = [cm.breakdown(decode(b, 100))["overheads"] - cm.overheads.per_seq_s * b for b in (1, 8, 64, 512)]
    assert all(b > a for a, b in zip(over, over[1:]))
    big_vocab = llama7b.model_copy(update={"vocab_size": 4 * llama7b.vocab_size})
    assert AnalyticCostModel(big_vocab, h100).breakdown(decode(64, 100))["overheads"] > cm.breakdown(decode(64, 100))["overheads"]


def test_profile_numbers_override_the_preset_and_old_style_overheads_still_validate(h100):
    o = Overheads(preset="eager", step_s=0.01).resolved()
    assert (o.name, o.step_s, o.per_seq_s) == ("eager+overrides", 0.01, PRESETS["eager"].per_seq_s)
    legacy = Overheads(step_s=0.0003, per_seq_s=0.00001).resolved()  # a schema-1 file written before presets
    assert legacy.name == "custom" and legacy.step_s == 0.0003
    assert legacy.sampling_bytes_per_logit == PRESETS["cuda-graph"].sampling_bytes_per_logit
    assert Overheads().resolved() == PRESETS["cuda-graph"]
    data = yaml.safe_load((REPO_PROFILES_DIR / "h100-80g-sxm.yaml").read_text())
    del data["overheads"], data["efficiency"]["roofline_p"], data["efficiency"]["gemm_launch_us"], data["comm"]["allreduce_by_tp"]
    assert type(h100).model_validate(data).overheads.resolved().name == "cuda-graph"  # every new field is optional


def test_an_unknown_preset_in_a_profile_names_the_field_and_the_file(tmp_path):
    data = yaml.safe_load((REPO_PROFILES_DIR / "a100-80g-sxm.yaml").read_text())
    data["overheads"] = {"preset": "cuda-graphs"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LlmsimError) as info:
        load_profile(path)
    assert "preset" in str(info.value) and str(path) in str(info.value) and "cuda-graph" in str(info.value)


def test_a_scenario_overrides_the_profiles_preset_and_numbers(h100, llama7b):
    scenario_presets = typing.get_args(typing.get_args(AnalyticCostConfig.model_fields["overhead_preset"].annotation)[0])
    assert set(scenario_presets) == set(PRESETS)  # the scenario schema lists the same presets
    own_numbers = with_preset(h100, preset="cuda-graph", step_s=0.02)
    assert analytic(AnalyticCostConfig(overhead_preset="eager"), llama7b, own_numbers, 1).overheads == PRESETS["eager"]
    cm = analytic(AnalyticCostConfig(overhead_preset="eager"), llama7b, h100, 1)
    assert cm.overheads == PRESETS["eager"]
    cm = analytic(AnalyticCostConfig(step_overhead_s=0.002, sampling_bytes_per_logit=0.0), llama7b, h100, 1)
    assert (cm.overheads.name, cm.overheads.step_s, cm.overheads.sampling_bytes_per_logit) == ("cuda-graph+overrides", 0.002, 0.0)


def test_step_time_names_the_overhead_preset(capsys):
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", "a100-80g-sxm", "--decode", "4", "--context", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overhead_preset"] == "cuda-graph"
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", "a100-80g-sxm", "--prefill", "16"]) == 0
    assert "overheads preset cuda-graph" in capsys.readouterr().out
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", "a100-80g-sxm", "--decode", "4", "--context", "64", "--overheads", "eager", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overhead_preset"] == "eager"


# ----- smooth roofline -----


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 4.0, math.inf])
def test_smooth_max_is_never_below_either_bound_nor_above_its_p_norm_ceiling(p):
    rng = np.random.default_rng(23)
    for c, m in rng.lognormal(-10, 3, size=(200, 2)):
        s = smooth_max(float(c), float(m), p)
        assert max(c, m) <= s * (1 + 1e-12) and s <= 2 ** (1 / p) * max(c, m) * (1 + 1e-12)
    assert smooth_max(1.0, 1.0, 2.0) == pytest.approx(math.sqrt(2)) and smooth_max(3.0, 1.0, math.inf) == 3.0


def test_gemms_take_launch_plus_smooth_roofline_above_both_bounds_and_monotone(h100):
    cm = AnalyticCostModel(load_model("llama-3.1-8b"), h100)
    n, k = 14336 * 2, 4096
    times = [cm._gemm_s(m, n, k) for m in range(1, 4097, 7)]
    assert np.all(np.diff(times) > 0)
    for m in (1, 64, 300, 1024, 4096):
        compute = 2.0 * m * n * k / cm._gemm_flops_per_s
        memory = (m * k + k * n + m * n) * 2 / cm._gemm_bytes_per_s
        t = cm._gemm_s(m, n, k)
        assert t >= cm._gemm_launch_s + max(compute, memory) and t == pytest.approx(cm._gemm_launch_s + math.hypot(compute, memory))
    # near the crossover the smooth roofline charges up to sqrt(2) x the hard max
    hard_max = h100.model_copy(update={"efficiency": h100.efficiency.model_copy(update={"roofline_p": math.inf})})
    hard = AnalyticCostModel(load_model("llama-3.1-8b"), hard_max)
    ratios = [cm._gemm_s(m, n, k) / hard._gemm_s(m, n, k) for m in (1, 32, 128, 256, 512, 2048, 8192)]
    assert all(1.0 <= r <= math.sqrt(2) + 1e-9 for r in ratios) and max(ratios) > 1.2


def test_moe_expert_gemms_are_slowed_by_the_fused_moe_efficiency(h100):
    mixtral, dense = load_model("mixtral-8x7b"), load_model("llama-2-7b")

    def gemm_ms(model, eff):
        profile = h100.model_copy(update={"efficiency": h100.efficiency.model_copy(update={"moe_gemm_efficiency": eff})})
        return AnalyticCostModel(model, profile, 2 if model.is_moe else 1).breakdown(decode(32, 500))["gemm"]

    assert gemm_ms(mixtral, 0.6) > gemm_ms(mixtral, 0.8) > gemm_ms(mixtral, 1.0)
    assert gemm_ms(dense, 0.6) == gemm_ms(dense, 1.0)


# ----- all-reduce -----


def test_allreduce_uses_the_per_tp_fit_and_grows_with_message_size(h100):
    comm = h100.comm
    for fit in comm.allreduce_by_tp:
        latency_s, s_per_byte = allreduce_params(comm, fit.tp)
        assert latency_s == fit.latency_us * 1e-6
        assert s_per_byte == pytest.approx(2 * (fit.tp - 1) / fit.tp / (fit.bus_gb_per_s * 1e9))
    assert allreduce_params(comm, 3) == (comm.allreduce_latency_us * 1e-6, 2 * 2 / 3 / (comm.allreduce_bus_gb_per_s * 1e9))
    model = load_model("llama-2-70b")
    cm = AnalyticCostModel(model, h100, 4)
    comm_s = [cm.breakdown(decode(b, 100))["communication"] for b in (1, 16, 256, 4096)]
    assert all(b > a for a, b in zip(comm_s, comm_s[1:]))
    with pytest.raises(ValueError, match="allreduce_by_tp"):
        type(comm).model_validate(comm.model_dump() | {"allreduce_by_tp": [{"tp": 2, "latency_us": 1, "bus_gb_per_s": 1}] * 2})
