"""`llmsim import-profile vidur`: Vidur's published CSVs -> a `measured-public` table profile.

The shipped profile hardware_profiles/a100-80g-sxm-vidur.yaml is rebuilt from the CSV subset in
hardware_profiles/data/vidur/ and compared; step times of the table model are checked against
the CSV rows themselves: GEMMs exactly (the table holds the medians), fitted parts within the fit
quality the profile reports.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llmsim.cli import main
from llmsim.costmodel import BatchShape, load_model, load_profile
from llmsim.costmodel.import_vidur import find_sources, import_vidur
from llmsim.costmodel.tables import TableCostModel, cost_model_for, surface_curve
from llmsim.errors import LlmsimError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "hardware_profiles" / "data" / "vidur"
MLP_CSV = DATA / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
ATTENTION_CSV = DATA / "compute" / "a100" / "meta-llama" / "Llama-2-7b-hf" / "attention.csv"
ALLREDUCE_CSV = DATA / "network" / "a100_dgx" / "all_reduce.csv"
SHIPPED = "a100-80g-sxm-vidur"
LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_shipped_profile_is_measured_public_with_its_source_and_uses_the_table_model():
    profile = load_profile(SHIPPED)
    assert profile.calibration.fidelity == "measured-public"
    assert "github.com/microsoft/vidur" in profile.calibration.source and "MIT" in profile.calibration.source
    assert profile.schema_version == 2 and profile.has_tables
    assert {t.tp for t in profile.comm.allreduce_tables} == {2, 4, 8} and profile.comm.measured
    assert isinstance(cost_model_for(load_model("llama-2-7b"), profile, 1), TableCostModel)


@pytest.mark.parametrize("gpu, name", [("a100", SHIPPED), ("h100", "h100-80g-sxm-vidur")])
def test_import_rebuilds_the_shipped_profile_from_the_committed_csvs(tmp_path, capsys, gpu, name):
    out = tmp_path / f"{gpu}.yaml"
    argv = ["import-profile", "vidur", "--gpu", gpu, "--model", "llama-2-7b", "--tp", "1,2,4,8",
            "--source", str(DATA), "--out", str(out), "--date", "2026-12-04", "--name", name]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    rebuilt, shipped = load_profile(out), load_profile(name)
    for section in ("hardware", "efficiency", "comm", "overheads", "gemm", "attention", "elementwise", "fit_report"):
        _assert_same_values(_plain(getattr(rebuilt, section)), _plain(getattr(shipped, section)), section)
    assert main(argv) == 2  # refuses to overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def _plain(value):
    """A profile section as nested dicts, lists and scalars."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _assert_same_values(rebuilt, shipped, path: str) -> None:
    """Equal structure and values, floats to 1e-12 relative: the fits and the log-spaced grids go
    through numpy's vectorised log, exp and least squares, whose last bit depends on the CPU's
    instruction set (an AMD EPYC machine rebuilt the shipped profiles with a few values one ulp
    off), so bit equality would test the machine, not the import."""
    if isinstance(shipped, dict):
        assert isinstance(rebuilt, dict) and rebuilt.keys() == shipped.keys(), path
        for key in shipped:
            _assert_same_values(rebuilt[key], shipped[key], f"{path}.{key}")
    elif isinstance(shipped, (list, tuple)):
        assert isinstance(rebuilt, (list, tuple)) and len(rebuilt) == len(shipped), path
        for i, (r, s) in enumerate(zip(rebuilt, shipped)):
            _assert_same_values(r, s, f"{path}[{i}]")
    elif isinstance(shipped, float):
        assert rebuilt == pytest.approx(shipped, rel=1e-12, abs=0.0), path
    else:
        assert rebuilt == shipped, path


@pytest.fixture(scope="module")
def shipped():
    model, profile = load_model("llama-2-7b"), load_profile(SHIPPED)
    return model, profile, {tp: cost_model_for(model, profile, tp) for tp in (1, 2)}


def _decode(batch: int, kv_tokens: int) -> BatchShape:
    return BatchShape(decode_seqs=batch, decode_context_sum_tokens=batch * kv_tokens, decode_context_max_tokens=kv_tokens)


def test_step_time_command_runs_on_the_imported_profile(capsys):
    assert main(["step-time", "--model", "llama-2-7b", "--hardware", SHIPPED, "--json", "--prefill", "1024"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost_model"] == "TableCostModel" and out["fidelity"] == "measured-public"
    assert out["step_ms"] == pytest.approx(sum(out["breakdown_ms"].values()), rel=1e-9)
    assert out["breakdown_ms"]["attention"] > 0 and out["breakdown_ms"]["elementwise"] > 0


@pytest.mark.parametrize("shape, tokens, seqs", [
    (BatchShape((1024,), (0,)), 1024, 1),
    (BatchShape((1536,), (0,)), 1536, 1),
    (_decode(512, 65), 512, 512),
])
def test_step_gemm_time_is_the_sum_of_the_csv_medians(shipped, shape, tokens, seqs):
    """At token counts where Vidur's medians are already non-decreasing, the GEMM component is
    layers x (the four linear-layer medians of that CSV row) plus the LM head, which Vidur does not
    time and the profile prices from the GEMM surface fitted to the same rows."""
    model, profile, cms = shipped
    rows = [r for r in _rows(MLP_CSV) if r["num_tensor_parallel_workers"] == "1" and int(r["num_tokens"]) == tokens]
    assert len(rows) == 1
    layer_s = sum(float(rows[0][f"time_stats.{op}.median"]) for op in LINEAR_OPS) * 1e-3
    lm_head_s = surface_curve(profile.gemm.surface, model.vocab_size, model.hidden_size)(seqs)
    parts = cms[1].breakdown(shape)
    assert parts["gemm"] == pytest.approx(model.num_hidden_layers * layer_s + lm_head_s, rel=1e-9)
    assert cms[1].step_time_s(shape) == pytest.approx(sum(parts.values()), rel=1e-9)


@pytest.mark.parametrize("batch, kv_tokens", [(64, 1728), (64, 3904), (8, 32)])
def test_decode_attention_follows_the_csv_rows(shipped, batch, kv_tokens):
    """One layer's decode attention against Vidur's kernel + reshape medians for that row (the
    decode fit reports 3.8% median error over these rows)."""
    model, _, cms = shipped
    row = next(r for r in _rows(ATTENTION_CSV) if r["is_prefill"] == "False" and int(r["batch_size"]) == batch
               and int(r["kv_cache_size"]) == kv_tokens)
    measured_s = sum(float(row[f"time_stats.{op}.median"]) for op in ("attn_input_reshape", "attn_decode", "attn_output_reshape")) * 1e-3
    attention_s = cms[1].breakdown(_decode(batch, kv_tokens))["attention"]
    assert attention_s / model.num_hidden_layers == pytest.approx(measured_s, rel=0.10)


def test_tp2_all_reduce_comes_from_the_measured_curve(shipped):
    """A decode of 64 sequences all-reduces 64 x 4096 x 2 bytes, 2 x 32 + 1 times; each costs what
    Vidur measured for the neighbouring message sizes (interpolated between them)."""
    model, _, cms = shipped
    num_bytes = 64 * model.hidden_size * 2
    rows = [r for r in _rows(ALLREDUCE_CSV) if r["num_workers"] == r["devices_per_node"] == "2"]
    below = max(int(r["size"]) for r in rows if int(r["size"]) <= num_bytes)
    above = min(int(r["size"]) for r in rows if int(r["size"]) >= num_bytes)
    near_s = [float(r["time_stats.all_reduce.median"]) * 1e-3 for r in rows if int(r["size"]) in (below, above)]
    per_call_s = cms[2].breakdown(_decode(64, 129))["communication"] / (2 * model.num_hidden_layers + 1)
    assert min(near_s) * 0.95 <= per_call_s <= max(near_s) * 1.05


def test_without_attention_rows_the_table_model_prices_attention_analytically():
    """Vidur's H100 attention file is not available: the H100 profile's GEMMs come from its tables,
    its attention from the same analytic formula as the template it was imported onto."""
    model, profile = load_model("llama-2-7b"), load_profile("h100-80g-sxm-vidur")
    assert profile.attention is None and "prices it analytically" in profile.calibration.notes
    table = cost_model_for(model, profile, 1)
    analytic = cost_model_for(model, load_profile("h100-80g-sxm"), 1)
    assert isinstance(table, TableCostModel) and table.attention_config is None
    for shape in (BatchShape((2048,), (0,)), _decode(32, 1025), BatchShape((512,), (1024,), 8, 8 * 600, 600)):
        assert table.breakdown(shape)["attention"] == pytest.approx(analytic.breakdown(shape)["attention"], rel=1e-12)
        assert table.breakdown(shape)["gemm"] != pytest.approx(analytic.breakdown(shape)["gemm"], rel=0.01)


# ----- bad input -----


def _import(tmp_path, *sources: Path, model: str = "llama-2-7b", tp: str = "1"):
    argv = ["import-profile", "vidur", "--gpu", "a100", "--model", model, "--tp", tp, "--out", str(tmp_path / "x.yaml")]
    for s in sources:
        argv += ["--source", str(s)]
    return main(argv)


def test_a_model_of_another_shape_is_refused_naming_the_file(tmp_path, capsys):
    assert _import(tmp_path, MLP_CSV, model="llama-3.1-8b") == 2
    err = capsys.readouterr().err
    assert str(MLP_CSV) in err and "n_kv_head=32" in err and "llama-3.1-8b" in err


def test_missing_column_bad_number_and_unknown_tp_name_the_file_and_line(tmp_path, capsys):
    lines = MLP_CSV.read_text().splitlines()
    header = lines[0].split(",")
    broken = tmp_path / "cut" / "mlp.csv"
    broken.parent.mkdir()
    broken.write_text("\n".join(",".join(c for c in line.split(",")[:-1]) for line in lines[:3]) + "\n")
    assert _import(tmp_path, broken) == 2
    assert "missing column num_tensor_parallel_workers" in capsys.readouterr().err
    cells = lines[1].split(",")
    cells[header.index("time_stats.mlp_up_proj.median")] = "fast"
    broken.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    assert _import(tmp_path, broken) == 2
    err = capsys.readouterr().err
    assert f"{broken} line 2" in err and "time_stats.mlp_up_proj.median" in err and "'fast'" in err
    assert _import(tmp_path, MLP_CSV, tp="16") == 2
    assert "num_tensor_parallel_workers=16" in capsys.readouterr().err


def test_a_bad_attention_row_is_named_by_file_line_and_column(tmp_path, capsys):
    lines = ATTENTION_CSV.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("is_prefill")] = "maybe"
    broken = tmp_path / "attention.csv"
    broken.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    assert _import(tmp_path, MLP_CSV, broken) == 2
    assert f"{broken} line 2: is_prefill is 'maybe'" in capsys.readouterr().err
    cells[header.index("is_prefill")] = "False"
    cells[header.index("time_stats.attn_output_reshape.median")] = "n/a"
    broken.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    assert _import(tmp_path, MLP_CSV, broken) == 2
    assert "line 2: column time_stats.attn_output_reshape.median is 'n/a'" in capsys.readouterr().err


def test_a_tp_degree_without_all_reduce_rows_is_refused(tmp_path, capsys):
    lines = ALLREDUCE_CSV.read_text().splitlines()
    header = lines[0].split(",")
    workers = header.index("num_workers")
    only_tp4 = tmp_path / "all_reduce.csv"
    only_tp4.write_text("\n".join([lines[0], *(l for l in lines[1:] if l.split(",")[workers] == "4")]) + "\n")
    assert _import(tmp_path, MLP_CSV, only_tp4, tp="1,2") == 2
    err = capsys.readouterr().err
    assert str(only_tp4) in err and "for TP 2; the file has 4" in err


def test_sources_are_found_by_layout_or_file_name(tmp_path):
    found = find_sources([DATA], "a100", "meta-llama/Llama-2-7b-hf")
    assert (found.mlp, found.attention, found.all_reduce) == (MLP_CSV, ATTENTION_CSV, ALLREDUCE_CSV)
    only_mlp = find_sources([MLP_CSV], "a100", "meta-llama/Llama-2-7b-hf")
    assert only_mlp.attention is None and only_mlp.all_reduce is None
    with pytest.raises(LlmsimError, match="mlp.csv, attention.csv or all_reduce.csv"):
        find_sources([REPO / "README.md"], "a100", "x")
    with pytest.raises(LlmsimError, match="no mlp.csv"):
        find_sources([tmp_path], "a100", "meta-llama/Llama-2-7b-hf")


def test_without_attention_rows_the_profile_says_so(tmp_path):
    """GEMMs alone: still measured-public, attention left to the template (named in the notes)."""
    import datetime

    sources = find_sources([MLP_CSV], "a100", "meta-llama/Llama-2-7b-hf")
    profile = import_vidur(sources, load_model("llama-2-7b"), [1], "a100", load_profile("a100-80g-sxm"), "x", datetime.date(2026, 12, 4))
    assert profile.attention is None and "no attention table" in profile.calibration.notes
    assert profile.calibration.fidelity == "measured-public" and len(profile.gemm.shapes) == 4
