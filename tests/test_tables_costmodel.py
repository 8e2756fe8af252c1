"""Tests of profile schema 2, the fits (llmsim.costmodel.fit), the sanity checks and TableCostModel.

Synthetic raw measurements come from known H100-like rooflines (GEMMs: max of compute at 70% of
989 TFLOP/s, weight streaming at 82% of 3.35 TB/s, a 4 us floor) and known linear attention,
bandwidth and all-reduce laws, so the fits can be checked against the truth.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import yaml
from helpers import check_run_pricer

from llmsim.costmodel import AnalyticCostModel, BatchShape, CostModel, load_model, load_profile
from llmsim.costmodel import _attention as feat
from llmsim.costmodel._numeric import TimeCurve, isotonic_non_decreasing, nnls
from llmsim.costmodel.checks import checks_text
from llmsim.costmodel.fit import fit_profile, fit_report_text, sanity_checks
from llmsim.costmodel.measurements import (
    AllReducePoint,
    BandwidthPoint,
    DecodeAttentionPoint,
    GemmPoint,
    PrefillAttentionPoint,
    RawMeasurements,
)
from llmsim.costmodel.profile import REPO_PROFILES_DIR, HardwareProfile
from llmsim.costmodel.tables import TableCostModel, cost_model_for
from llmsim.errors import LlmsimError

PEAK_FLOPS, HBM = 989e12, 3350e9
GEMM_FLOPS, GEMM_BW, GEMM_FLOOR_S = 0.7 * PEAK_FLOPS, 0.82 * HBM, 4e-6
PREFILL_TRUE = (1.2e-5, 1.0 / (0.5 * PEAK_FLOPS), 1.0 / (0.7 * HBM))  # launch s, s per FLOP, s per byte
DECODE_TRUE = (5e-6, 1e-7, 1.0 / (0.7 * HBM))  # launch s, s per sequence, s per KV byte
ELEM_FLOOR_S, ELEM_BW = 3e-6, 0.75 * HBM
H2D, D2H, LINK_LAT_S = 50e9, 45e9, 8e-6
AR_LAT_S, AR_BUS = 10e-6, 360e9
TOKENS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
DATE = datetime.date(2025, 6, 1)


def true_gemm_s(tokens: float, n: int, k: int) -> float:
    flops = 2.0 * tokens * n * k
    moved = (tokens * k + k * n + tokens * n) * 2
    return max(flops / GEMM_FLOPS, moved / GEMM_BW, GEMM_FLOOR_S)


def gemm_shapes(model, tp: int) -> set[tuple[int, int]]:
    h, hd = model.hidden_size, model.head_dim
    q, kv = model.q_heads_per_gpu(tp) * hd, model.kv_heads_per_gpu(tp) * hd
    inter = -(-model.intermediate_size // tp)
    shapes = {(q + 2 * kv, h), (h, q), (2 * inter, h), (h, inter), (-(-model.vocab_size // tp), h)}
    if model.is_moe:
        shapes.add((model.num_local_experts, h))
    return shapes


def true_prefill_s(cfg, chunk, prefix, batch) -> float:
    q, kv, hd = cfg
    flops = batch * feat.prefill_pairs(chunk, prefix) * feat.prefill_flops_per_pair(q, hd)
    moved = batch * feat.prefill_bytes(chunk, prefix + chunk, q, kv, hd, 2)
    return PREFILL_TRUE[0] + PREFILL_TRUE[1] * flops + PREFILL_TRUE[2] * moved


def true_decode_s(cfg, batch, context) -> float:
    _, kv, hd = cfg
    return DECODE_TRUE[0] + DECODE_TRUE[1] * batch + DECODE_TRUE[2] * batch * context * feat.kv_bytes_per_token(kv, hd, 2)


def synthetic_raw(models, tps, *, device="cuda", noise=0.0, seed=0, allreduce_tps=(2, 4)) -> RawMeasurements:
    rng = np.random.default_rng(seed)

    def jitter(t: float) -> float:
        return t * float(np.exp(rng.normal(0.0, noise))) if noise else t

    shapes, configs = set(), set()
    for m in models:
        for tp in tps:
            shapes |= gemm_shapes(m, tp)
            configs.add((m.q_heads_per_gpu(tp), m.kv_heads_per_gpu(tp), m.head_dim))
    raw = RawMeasurements(
        device=device, device_name="NVIDIA H100 80GB HBM3" if device == "cuda" else "cpu", dtype="bfloat16",
        torch_version="2.4.0", cuda_version="12.4", driver_version="550.54", attention_backends=("flash", "flash_attn_with_kvcache"),
        timer="cuda events, median of 50 after 10 warm-up", repetitions=50, duration_s=321.0,
    )
    raw.gemm = [GemmPoint(n, k, t, jitter(true_gemm_s(t, n, k))) for n, k in sorted(shapes) for t in TOKENS]
    for cfg in sorted(configs):
        for chunk, prefix, batch in [(c, 0, 1) for c in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)] + [
            (c, 0, 4) for c in (128, 512, 2048)
        ] + [(c, p, 2) for c in (256, 1024) for p in (512, 2048, 8192)]:
            raw.prefill_attention.append(PrefillAttentionPoint(*cfg, chunk, prefix, batch, jitter(true_prefill_s(cfg, chunk, prefix, batch))))
        for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            for ctx in (128, 512, 2048, 8192):
                raw.decode_attention.append(DecodeAttentionPoint(*cfg, batch, ctx, jitter(true_decode_s(cfg, batch, ctx))))
    raw.elementwise = [BandwidthPoint(b, jitter(max(ELEM_FLOOR_S, b / ELEM_BW))) for b in np.geomspace(1e4, 4e9, 18)]
    raw.host_to_device = [BandwidthPoint(b, jitter(LINK_LAT_S + b / H2D)) for b in np.geomspace(1e5, 1e9, 9)]
    raw.device_to_host = [BandwidthPoint(b, jitter(LINK_LAT_S + b / D2H)) for b in np.geomspace(1e5, 1e9, 9)]
    raw.allreduce = [
        AllReducePoint(tp, b, jitter(AR_LAT_S + 2.0 * (tp - 1) / tp * b / AR_BUS)) for tp in allreduce_tps for b in np.geomspace(1e3, 2e8, 12)
    ]
    return raw


@pytest.fixture(scope="module")
def models():
    return [load_model("llama-2-7b"), load_model("llama-2-70b"), load_model("mixtral-8x7b")]


@pytest.fixture(scope="module")
def h100():
    return load_profile("h100-80g-sxm")


@pytest.fixture(scope="module")
def raw(models):
    return synthetic_raw(models, (1, 2, 4, 8))


@pytest.fixture(scope="module")
def measured(raw, models, h100) -> HardwareProfile:
    return fit_profile(raw, h100, models, [1, 2, 4, 8], DATE, "h100-synthetic")


def decode(batch: int, context: int) -> BatchShape:
    return BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * context, decode_context_max_tokens=context)


def prefill(tokens: int) -> BatchShape:
    return BatchShape(prefill_chunk_tokens=(tokens,), prefill_prefix_tokens=(0,))


# ----- numeric helpers -----


def test_nnls_matches_unconstrained_solution_when_positive_and_clips_otherwise():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 1.0, (40, 3))
    x_true = np.array([2.0, 0.5, 3.0])
    np.testing.assert_allclose(nnls(a, a @ x_true), x_true, rtol=1e-9)
    b = a @ np.array([1.0, -2.0, 1.0])
    x = nnls(a, b)
    assert x.min() >= 0 and x[1] == 0.0
    ref = np.linalg.lstsq(a[:, [0, 2]], b, rcond=None)[0]
    np.testing.assert_allclose(x[[0, 2]], ref, rtol=1e-9)


def test_isotonic_regression_pools_violators():
    np.testing.assert_allclose(isotonic_non_decreasing([1, 3, 2, 4, 3.5, 5]), [1, 2.5, 2.5, 3.75, 3.75, 5])


def test_time_curve_is_flat_below_and_proportional_above_the_measured_range():
    c = TimeCurve([10, 100], [1e-5, 1e-4])
    assert c(1) == 1e-5 and c(1000) == pytest.approx(1e-3)
    assert c(31.6227766) == pytest.approx(10**-4.5, rel=1e-6)
    np.testing.assert_allclose(c.many(np.array([1, 10, 31.6227766, 100, 1000])), [c(1), c(10), c(31.6227766), c(100), c(1000)], rtol=1e-15)


# ----- fit recovery -----


def test_attention_fits_recover_the_generating_coefficients_within_1_percent(measured):
    assert measured.attention is not None and len(measured.attention.configs) >= 4
    for cfg in measured.attention.configs:
        pf, df = cfg.prefill, cfg.decode
        for got, true in zip((pf.launch_s, pf.s_per_flop, pf.s_per_byte), PREFILL_TRUE, strict=True):
            assert got == pytest.approx(true, rel=0.01)
        for got, true in zip((df.launch_s, df.s_per_seq, df.s_per_byte), DECODE_TRUE, strict=True):
            assert got == pytest.approx(true, rel=0.01)
        assert pf.fit.worst_rel_error < 1e-6 and df.fit.worst_rel_error < 1e-6
        assert cfg.chunked_prefill_points and all(p.prefix_tokens > 0 for p in cfg.chunked_prefill_points)
        assert all(p.prefix_tokens == 0 for p in cfg.prefill_points)


def test_attention_fit_with_2_percent_noise_stays_close(models, h100):
    noisy = fit_profile(synthetic_raw(models[:1], (1,), noise=0.02, seed=3), h100, models[:1], [1], DATE, "noisy")
    cfg = noisy.attention.configs[0]
    assert cfg.prefill.s_per_flop == pytest.approx(PREFILL_TRUE[1], rel=0.03)
    assert cfg.decode.s_per_byte == pytest.approx(DECODE_TRUE[2], rel=0.03)
    assert 0.005 < cfg.decode.fit.median_rel_error < 0.04


def test_gemm_tables_are_exact_at_measured_points_and_monotone_between(measured, raw):
    truth = {(p.n, p.k, p.tokens): p.seconds for p in raw.gemm}
    for table in measured.gemm.shapes:
        curve = TimeCurve(table.tokens, table.seconds)
        for t, s in zip(table.tokens, table.seconds, strict=True):
            assert s == truth[(table.n, table.k, t)]
            assert curve(t) == pytest.approx(s, rel=1e-12)
        fine = curve.many(np.arange(1, 9000, 7))
        assert np.all(np.diff(fine) >= 0)
        assert table.fit.points == len(TOKENS) and table.fit.worst_rel_error < 1e-12


def test_noisy_gemm_table_is_made_non_decreasing_and_reports_its_error(h100):
    model = load_model("llama-2-7b")
    raw = synthetic_raw([model], (1,), noise=0.05, seed=7)
    profile = fit_profile(raw, h100, [model], [1], DATE, "noisy")
    for table in profile.gemm.shapes:
        assert np.all(np.diff(table.seconds) >= 0)
        assert 0 < table.fit.worst_rel_error < 0.5
    assert any(e.table.startswith("gemm n=") and e.worst_rel_error > 0 for e in profile.fit_report)


def test_bandwidth_and_allreduce_fits_recover_the_generating_laws(measured):
    hl = measured.host_link
    assert hl.h2d_gb_per_s == pytest.approx(H2D / 1e9, rel=0.01)
    assert hl.d2h_gb_per_s == pytest.approx(D2H / 1e9, rel=0.01)
    assert hl.latency_us == pytest.approx(LINK_LAT_S * 1e6, rel=0.01)
    ew = measured.elementwise
    assert ew.floor_us == pytest.approx(ELEM_FLOOR_S * 1e6)
    assert ew.gb_per_s[-1] == pytest.approx(ELEM_BW / 1e9, rel=1e-9)
    tables = {t.tp: t for t in measured.comm.allreduce_tables}
    assert set(tables) == {2, 4} and measured.comm.measured
    for t in tables.values():
        assert t.latency_us == pytest.approx(AR_LAT_S * 1e6, rel=0.01)
        assert t.bus_gb_per_s == pytest.approx(AR_BUS / 1e9, rel=0.01)


def test_fit_profile_records_provenance_and_fidelity(measured, models, h100):
    cal = measured.calibration
    assert measured.schema_version == 2 and measured.hardware.name == "h100-synthetic"
    assert cal.fidelity == "measured" and cal.date == DATE and cal.torch_version == "2.4.0"
    assert cal.timer.startswith("cuda events") and cal.repetitions == 50 and cal.dtype == "bfloat16"
    assert measured.attention.backends == ("flash", "flash_attn_with_kvcache")
    assert measured.validation and all(v.passed for v in measured.validation), checks_text(sanity_checks(measured, models))
    cpu = fit_profile(synthetic_raw(models[:1], (1,), device="cpu"), h100, models[:1], [1], DATE, "cpu")
    assert cpu.calibration.fidelity == "coarse-cpu"


def test_fit_report_text_lists_every_table(measured):
    text = fit_report_text(measured)
    assert "points" in text and "median err" in text
    assert len(text.splitlines()) == len(measured.fit_report) + 1
    assert "attention decode 32/32/128" in text and "gemm surface" in text
    assert "no fit report" in fit_report_text(load_profile("a100-80g-sxm"))


# ----- schema -----


def test_v2_profile_round_trips_through_yaml(measured, tmp_path):
    path = tmp_path / "h100-synthetic.yaml"
    path.write_text(yaml.safe_dump(measured.model_dump(mode="json"), sort_keys=False))
    loaded = load_profile(path)
    assert loaded == measured
    assert load_profile("h100-synthetic", search_dirs=[tmp_path]).has_tables


def test_v2_sections_need_schema_version_2_and_unknown_keys_name_key_and_file(measured, tmp_path):
    data = measured.model_dump(mode="json")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data | {"schema_version": 1}))
    with pytest.raises(LlmsimError, match="schema_version"):
        load_profile(path)
    data["attention"]["configs"][0]["decode"]["magic_s"] = 1.0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LlmsimError) as info:
        load_profile(path)
    assert "magic_s" in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    data = measured.model_dump(mode="json")
    data["gemm"]["shapes"][0]["seconds"] = data["gemm"]["shapes"][0]["seconds"][:-1]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LlmsimError, match="gemm"):
        load_profile(path)


def test_v1_shipped_profiles_still_load_and_fall_back_to_the_analytic_model():
    model = load_model("llama-2-7b")
    v1 = [p for p in REPO_PROFILES_DIR.glob("*.yaml") if load_profile(p).schema_version == 1]
    assert len(v1) >= 3  # the spec-sheet templates; measured profiles (schema 2) are tested elsewhere
    for path in v1:
        profile = load_profile(path)
        assert not profile.has_tables and profile.gemm is None
        cm = cost_model_for(model, profile, 1)
        assert isinstance(cm, AnalyticCostModel)
        with pytest.raises(LlmsimError, match="pipeline_parallel"):
            cost_model_for(model, profile, 1, 2)
        with pytest.raises(LlmsimError, match="tables"):
            TableCostModel(model, profile)


# ----- TableCostModel -----


@pytest.fixture(scope="module", params=[("llama-2-7b", 1), ("llama-2-70b", 4), ("mixtral-8x7b", 2)])
def table_cm(request, measured):
    name, tp = request.param
    return cost_model_for(load_model(name), measured, tp)


def test_table_model_satisfies_protocol_and_is_monotone(table_cm):
    assert isinstance(table_cm, TableCostModel) and isinstance(table_cm, CostModel)
    assert table_cm.attention_config_exact and not table_cm.unmeasured_gemm_shapes
    for times in (
        [table_cm.step_time_s(prefill(t)) for t in range(1, 16385, 61)],
        [table_cm.step_time_s(decode(b, 1024)) for b in range(1, 513)],
        [table_cm.step_time_s(decode(16, c)) for c in range(1, 32768, 37)],
        [table_cm.step_time_s(BatchShape((512,), (p,), 8, 8 * 700, 700)) for p in range(0, 8192, 128)],
    ):
        assert np.all(np.diff(times) >= 0)


def test_breakdown_sums_to_step_time_and_empty_shape_is_free(table_cm):
    shape = BatchShape((300, 512), (0, 1024), 40, 40 * 900, 2000)
    assert sum(table_cm.breakdown(shape).values()) == pytest.approx(table_cm.step_time_s(shape), rel=1e-12)
    assert table_cm.step_time_s(BatchShape()) == 0.0
    assert table_cm.step_time_s(BatchShape((700,))) == table_cm.step_time_s(BatchShape((700,), (0,)))


def test_a_decode_run_is_priced_as_its_steps_one_by_one(table_cm):
    for seqs, ctx_sum, ctx_max, steps in ((1, 5, 5, 50), (37, 37 * 800, 1500, 300), (256, 10**6, 9000, 7)):
        scalar = [table_cm.step_time_s(BatchShape((), (), seqs, ctx_sum + j * seqs, ctx_max + j)) for j in range(steps)]
        check_run_pricer(table_cm, seqs, ctx_sum, ctx_max, scalar)  # bit for bit: fast-forward relies on it
    check_run_pricer(table_cm, 0, 0, 0, [0.0, 0.0, 0.0])


def test_memory_and_compute_bound_regimes_on_the_synthetic_h100(measured, h100):
    model = load_model("llama-2-7b")
    cm, analytic = TableCostModel(model, measured), AnalyticCostModel(model, h100)
    gemm_1, gemm_8 = cm.breakdown(decode(1, 1024))["gemm"], cm.breakdown(decode(8, 1024))["gemm"]
    assert gemm_1 <= gemm_8 <= 1.03 * gemm_1  # weight streaming: flat in batch
    ratio = cm.breakdown(prefill(4096))["gemm"] / cm.breakdown(prefill(2048))["gemm"]
    assert 1.9 <= ratio <= 2.0  # compute bound: linear in tokens
    floors = cm.floors(prefill(4096))
    assert cm.step_time_s(prefill(4096)) > floors["flop_floor_s"] > floors["bandwidth_floor_s"]
    floors = cm.floors(decode(1, 512))
    assert cm.step_time_s(decode(1, 512)) > floors["bandwidth_floor_s"] > floors["flop_floor_s"]
    # The synthetic truth is built from rooflines like the analytic H100 profile's: they agree.
    for shape in (decode(1, 512), decode(64, 2048), prefill(512), prefill(8192), BatchShape((512,), (4096,), 32, 32 * 1000, 1000)):
        assert cm.step_time_s(shape) == pytest.approx(analytic.step_time_s(shape), rel=0.15)


def test_tensor_parallel_cuts_gemm_to_at_least_1_over_k_and_adds_measured_communication(measured):
    model = load_model("llama-2-70b")
    tp1 = TableCostModel(model, measured, 1)
    for k in (2, 4, 8):
        tpk = TableCostModel(model, measured, k)
        for shape in (decode(32, 1024), prefill(2048)):
            b1, bk = tp1.breakdown(shape), tpk.breakdown(shape)
            assert b1["gemm"] / k <= bk["gemm"] < b1["gemm"]
            assert b1["communication"] == 0.0 < bk["communication"]
            assert tpk.step_time_s(shape) < tp1.step_time_s(shape)
    # TP 4 has a measured table (latency 10 us + ring / 360 GB/s); TP 8 uses the comm scalars.
    tokens, hidden = 64, model.hidden_size
    per_allreduce = TableCostModel(model, measured, 4).breakdown(decode(tokens, 100))["communication"] / (2 * 80 + 1)
    table = next(t for t in measured.comm.allreduce_tables if t.tp == 4)
    assert per_allreduce == pytest.approx(TimeCurve(table.num_bytes, table.seconds)(tokens * hidden * 2), rel=1e-12)
    assert per_allreduce == pytest.approx(AR_LAT_S + 1.5 * tokens * hidden * 2 / AR_BUS, rel=0.05)  # log-log interpolation
    # TP 8 has no table: the profile's per-TP fit for 8 (comm.allreduce_by_tp), else the scalars.
    fit8 = next(f for f in measured.comm.allreduce_by_tp if f.tp == 8)
    per_allreduce = TableCostModel(model, measured, 8).breakdown(decode(tokens, 100))["communication"] / (2 * 80 + 1)
    assert per_allreduce == pytest.approx(fit8.latency_us * 1e-6 + 1.75 * tokens * hidden * 2 / (fit8.bus_gb_per_s * 1e9), rel=1e-12)
    scalars = measured.model_copy(update={"comm": measured.comm.model_copy(update={"allreduce_by_tp": None})})
    comm = scalars.comm
    per_allreduce = TableCostModel(model, scalars, 8).breakdown(decode(tokens, 100))["communication"] / (2 * 80 + 1)
    expected = comm.allreduce_latency_us * 1e-6 + 1.75 * tokens * hidden * 2 / (comm.allreduce_bus_gb_per_s * 1e9)
    assert per_allreduce == pytest.approx(expected, rel=1e-12)


def test_pipeline_parallel_adds_one_activation_send_per_stage_boundary(measured):
    model = load_model("llama-2-70b")
    hw = measured.hardware
    base = TableCostModel(model, measured, 4, 1)
    for pp in (2, 4):
        cm = cost_model_for(model, measured, 4, pp)
        assert sum(cm.stage_layers) == 80 and max(cm.stage_layers) - min(cm.stage_layers) <= 1
        for shape in (decode(32, 1024), prefill(2048)):
            tokens = shape.num_tokens
            send_s = measured.comm.allreduce_latency_us * 1e-6 + tokens * model.hidden_size * 2 / (hw.interconnect_gb_per_s / 2 * 1e9)
            assert cm.step_time_s(shape) - base.step_time_s(shape) == pytest.approx((pp - 1) * send_s, rel=1e-9)
            assert cm.breakdown(shape)["communication"] > base.breakdown(shape)["communication"]
    with pytest.raises(LlmsimError, match="pipeline_parallel"):
        TableCostModel(model, measured, 1, 81)


def test_unmeasured_shapes_and_head_configs_use_the_surface_and_nearest_fit(measured):
    model = load_model("llama-2-13b")  # 40 heads, hidden 5120: no table and no attention config of its own
    cm = TableCostModel(model, measured, 1)
    assert cm.unmeasured_gemm_shapes and not cm.attention_config_exact
    assert cm.attention_config[2] == model.head_dim
    assert measured.gemm.surface.fit.median_rel_error < 0.15
    for shape in (decode(1, 512), decode(64, 1024), prefill(2048)):
        truth = AnalyticCostModel(model, load_profile("h100-80g-sxm")).step_time_s(shape)
        assert cm.step_time_s(shape) == pytest.approx(truth, rel=0.25)
    times = [cm.step_time_s(prefill(t)) for t in range(1, 8193, 41)]
    assert np.all(np.diff(times) >= 0)


def test_swap_uses_the_slower_measured_host_link_direction(measured):
    cm = TableCostModel(load_model("llama-2-7b"), measured)
    assert cm.swap_time_s(4.5e9) == pytest.approx(4.5e9 / D2H, rel=0.01)


# ----- sanity checks -----


@pytest.mark.parametrize("name", ["a100-80g-sxm", "h100-80g-sxm"])
def test_sanity_checks_pass_on_the_shipped_analytic_profiles(name):
    results = sanity_checks(load_profile(name), [load_model("llama-2-7b"), load_model("llama-2-70b")])
    assert results and all(r.passed and not r.skipped for r in results), checks_text(results)


def test_sanity_checks_flag_a_gemm_table_above_peak(measured, models):
    data = measured.model_dump(mode="json")
    table = data["gemm"]["shapes"][0]
    n, k = table["n"], table["k"]
    # 120% of the spec peak at the largest token count (still non-decreasing in tokens).
    table["seconds"][-1] = 2.0 * table["tokens"][-1] * n * k / (1.2 * PEAK_FLOPS)
    table["seconds"] = [min(s, table["seconds"][-1]) for s in table["seconds"]]
    broken = HardwareProfile.model_validate(data)
    results = {r.name: r for r in sanity_checks(broken, models[:1])}
    assert not results["gemm below peak"].passed and not results["gemm below peak"].skipped
    assert f"n={n} k={k}" in results["gemm below peak"].detail
    data["gemm"]["shapes"][1]["seconds"][3] *= 10  # a table that decreases in tokens
    results = {r.name: r for r in sanity_checks(HardwareProfile.model_validate(data), models[:1])}
    assert not results["gemm tables non-decreasing"].passed


def test_sanity_checks_skip_gpu_peak_comparisons_on_a_cpu_profile(h100):
    model = load_model("llama-2-7b")
    cpu = fit_profile(synthetic_raw([model], (1, 2), device="cpu", allreduce_tps=()), h100, [model], [1, 2], DATE, "cpu")
    results = {r.name: r for r in sanity_checks(cpu, [model], [1, 2])}
    for name in ("gemm below peak", "allreduce", "decode floor llama-2-7b", "prefill floor llama-2-7b"):
        assert results[name].skipped and not results[name].passed and results[name].status == "skipped"
        assert "coarse-cpu" in results[name].detail
    assert results["monotone llama-2-7b"].passed and not results["monotone llama-2-7b"].skipped
    assert any(v.skipped for v in cpu.validation)
