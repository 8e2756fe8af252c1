"""`llmsim calibrate-hardware --device cpu --quick` writes a profile that validates and that
`llmsim run` accepts; `llmsim step-time` prints a breakdown and floors for each way of giving a
batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim import load_scenario, simulate
from llmsim.cli import main
from llmsim.costmodel import load_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "cpu-test.yaml"
    assert main(["calibrate-hardware", "--device", "cpu", "--quick", "--models", "llama-2-7b", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("case", ["missing-parent", "exists", "is-folder"])
def test_an_unwritable_profile_path_is_refused_before_any_benchmark(case, tmp_path, capsys, monkeypatch):
    from llmsim.costmodel import calibrate

    monkeypatch.setattr(calibrate, "run_microbenchmarks", lambda *a, **k: pytest.fail("benchmarks ran"))
    out = {"missing-parent": tmp_path / "nope" / "p.yaml", "exists": tmp_path / "p.yaml", "is-folder": tmp_path}[case]
    if case == "exists":
        out.write_text("kept\n")
    assert main(["calibrate-hardware", "--device", "cpu", "--quick", "--models", "llama-2-7b", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmsim: error: ") and "Traceback" not in err
    assert {"missing-parent": "does not exist", "exists": "pass --overwrite", "is-folder": "is a folder"}[case] in err
    if case == "exists":
        assert out.read_text() == "kept\n"


@pytest.mark.slow
def test_quick_cpu_calibration_writes_a_valid_coarse_profile_with_tables_and_a_fit_report(cpu_profile):
    p = load_profile(cpu_profile)
    assert p.calibration.fidelity == "coarse-cpu" and p.has_tables
    assert p.hardware.name == "cpu-test" and p.calibration.torch_version
    assert p.fit_report and all(e.points > 0 for e in p.fit_report)
    assert p.gemm is not None and len(p.gemm.shapes) == 5  # llama-2-7b: qkv, o, gate_up, down, lm_head


@pytest.mark.slow
def test_llmsim_run_accepts_the_calibrated_profile(cpu_profile, tmp_path):
    sc = load_scenario(REPO / "scenarios/sharegpt.yaml", [f"hardware={cpu_profile}", "workload.num_requests=20",
                                                        "workload.arrivals.rate_per_s=0.2", "engine.kv_capacity_tokens=20000"])
    r = simulate(sc)
    assert r.summary["num_finished"] == 20 and r.derived["hardware_fidelity"] == "coarse-cpu"
    assert type(r.engines[0].cost_model).__name__ == "TableCostModel"


def test_step_time_prints_breakdown_and_floors_as_json(capsys):
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", "h100-80g-sxm", "--decode", "32", "--context", "1024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    parts = out["breakdown_ms"]
    assert set(parts) == {"gemm", "attention", "elementwise", "communication", "overheads"}
    assert sum(parts.values()) == pytest.approx(out["step_ms"], rel=1e-9)
    assert out["step_ms"] > out["bandwidth_floor_ms"] > 0 and out["shape"]["decode_context_sum_tokens"] == 32 * 1025


def test_step_time_tensor_parallel_adds_communication(capsys):
    main(["step-time", "--model", "llama-2-70b", "--hardware", "h100-80g-sxm", "--tp", "4", "--prefill", "2048", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["breakdown_ms"]["communication"] > 0 and out["tensor_parallel"] == 4


def test_step_time_reads_a_batch_file_and_rejects_unknown_fields(tmp_path, capsys):
    f = tmp_path / "b.yaml"
    f.write_text("prefill_chunk_tokens: [512, 256]\nprefill_prefix_tokens: [0, 1024]\ndecode_seqs: 8\ndecode_context_sum_tokens: 8000\ndecode_context_max_tokens: 1000\n")
    assert main(["step-time", "--model", "llama-3.1-8b", "--hardware", "a100-80g-sxm", "--batch", str(f)]) == 0
    assert "step" in capsys.readouterr().out
    f.write_text("decode_seq: 8\n")
    assert main(["step-time", "--model", "llama-3.1-8b", "--hardware", "a100-80g-sxm", "--batch", str(f)]) == 2
    assert "unknown: decode_seq" in capsys.readouterr().err


def test_step_time_decode_needs_a_context(capsys):
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", "h100-80g-sxm", "--decode", "4"]) == 2
    assert "--context" in capsys.readouterr().err


def test_run_steps_flag_writes_a_step_series_that_llmsim_plot_draws(tmp_path):
    out = tmp_path / "r"
    assert main(["run", str(REPO / "scenarios/sharegpt.yaml"), "--set", "workload.num_requests=60", "--steps", "--quiet", "--out", str(out)]) == 0
    import pandas as pd

    steps = pd.read_csv(out / "steps.csv")
    assert {"start_s", "used_blocks", "running", "waiting", "decode_seqs", "prefill_tokens"} <= set(steps.columns) and len(steps) > 60
    assert main(["plot", str(out)]) == 0
    assert any(p.suffix == ".png" for p in out.rglob("*.png"))
