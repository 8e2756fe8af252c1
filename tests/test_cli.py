"""The command line, end to end: `llmsim run | validate | list`, through a real subprocess (the
installed `llmsim` entry point and `python -m llmsim`) and in-process through `llmsim.cli.main`.

Bad input must end with a non-zero exit status and exactly one line on stderr that starts with
`llmsim: error:` and says what is wrong and where (file and line, key, path), never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmsim.cli import main
from llmsim.registry import ROUTERS
from llmsim.cluster.simulation import simulate
from llmsim.config import load_scenario
from llmsim.costmodel import list_models, list_profiles
from llmsim.schedulers import SCHEDULERS

REPO = Path(__file__).resolve().parents[1]
LLMSIM = Path(sys.executable).parent / "llmsim"
SHAREGPT_CSV = REPO / "traces" / "sharegpt" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
SCENARIO_FILES = sorted((REPO / "scenarios").rglob("*.yaml"))
SUMMARY_KEYS = ("scheduler", "num_requests", "num_finished", "goodput_rps", "goodput_tps", "sla_attainment", "evictions", "throughput_tps")
LATENCY_KEYS = ("ttft_s", "tpot_s", "max_tbt_s", "e2e_s")


def llmsim(*args: str, cwd: Path = REPO, module: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "llmsim", *args] if module else [str(LLMSIM), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def summary_of(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text())


def _json_roundtrip(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: o.item()))


# ------------------------------------------------------------------------------------ run
@pytest.mark.slow
def test_run_sharegpt_writes_requests_summary_and_a_scenario_that_reproduces_the_summary(tmp_path):
    out = tmp_path / "out"
    proc = llmsim("run", "scenarios/sharegpt.yaml", "--set", "workload.num_requests=100", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["requests.csv", "scenario.yaml", "summary.json"]

    requests = pd.read_csv(out / "requests.csv")
    assert len(requests) == 100
    assert list(requests["request_id"]) == list(range(100))
    assert requests["finished"].all()

    summary = summary_of(out)
    for key in SUMMARY_KEYS:
        assert key in summary, key
    for key in LATENCY_KEYS:
        assert set(summary[key]) >= {"p50", "p90", "p99", "mean"}, key
        assert summary[key]["p50"] <= summary[key]["p90"] <= summary[key]["p99"]
    assert summary["scheduler"] == "past-future"
    assert summary["num_requests"] == 100
    assert summary["num_finished"] == 100
    assert 0.0 <= summary["sla_attainment"] <= 1.0
    assert summary["goodput_rps"] <= summary["throughput_rps"]
    assert summary["throughput_tps"] == pytest.approx(requests["generated_tokens"].sum() / summary["duration_s"])
    assert summary["ttft_s"]["mean"] == pytest.approx(requests["ttft_s"].mean())

    # the resolved scenario loads on its own (from another folder) and reproduces the run exactly
    loaded = load_scenario(out / "scenario.yaml")
    assert loaded.scenario.workload.num_requests == 100
    rerun = simulate(loaded)
    expected = {k: v for k, v in summary.items() if k not in ("labels", "derived", "notes", "run_id", "files", "provenance")}
    assert _json_roundtrip(rerun.summary) == expected
    pd.testing.assert_frame_equal(rerun.requests.reset_index(drop=True), requests, check_dtype=False, check_exact=True)


@pytest.mark.slow
def test_python_dash_m_llmsim_runs_like_the_entry_point(tmp_path):
    proc = llmsim("run", "scenarios/sharegpt.yaml", "--set", "workload.num_requests=20", "--out", str(tmp_path / "m"), "--quiet", module=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "m")  # --quiet prints the results folder only
    assert summary_of(tmp_path / "m")["num_requests"] == 20


def test_scheduler_seed_and_set_options_take_effect(tmp_path, capsys):
    base = ["run", str(REPO / "scenarios/sharegpt.yaml"), "--quiet", "--set", "workload.num_requests=40"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--scheduler", "conservative", "--seed", "5",
                 "--set", "engine.block_size=32", "--set", "sla.ttft_s=0.5"]) == 0
    capsys.readouterr()
    a, b = summary_of(tmp_path / "a"), summary_of(tmp_path / "b")
    assert (a["scheduler"], a["seed"], a["num_requests"]) == ("past-future", 0, 40)
    assert (b["scheduler"], b["seed"], b["num_requests"]) == ("conservative", 5, 40)
    assert b["sla"] == {"ttft_s": 0.5, "max_tbt_s": 1.5}
    assert b["derived"]["kv_blocks"] * 32 == b["derived"]["kv_capacity_tokens"]
    resolved = load_scenario(tmp_path / "b" / "scenario.yaml").scenario
    assert (resolved.scheduler.kind, resolved.seed, resolved.engine.block_size) == ("conservative", 5, 32)
    # another seed draws another workload
    ra = pd.read_csv(tmp_path / "a" / "requests.csv")
    rb = pd.read_csv(tmp_path / "b" / "requests.csv")
    assert not ra["arrival_s"].equals(rb["arrival_s"])


def test_run_without_out_writes_the_default_results_folder_under_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(REPO / "scenarios/sharegpt.yaml"), "--quiet", "--set", "workload.num_requests=10", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(Path("results") / "sharegpt-past-future-seed3")
    assert summary_of(tmp_path / "results" / "sharegpt-past-future-seed3")["seed"] == 3


# ------------------------------------------------------------------------------------ validate, list
@pytest.mark.parametrize("scenario", SCENARIO_FILES, ids=lambda p: str(p.relative_to(REPO / "scenarios")))
def test_validate_accepts_every_shipped_scenario(scenario, capsys):
    assert main(["validate", str(scenario)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.startswith(f"ok {scenario}")


def test_there_are_shipped_scenarios_to_validate():
    assert {str(p.relative_to(REPO / "scenarios")) for p in SCENARIO_FILES} >= {"sharegpt.yaml", "paper-decode-heavy.yaml", "paper/offline-dist1.yaml"}


@pytest.mark.slow
def test_validate_subprocess_exits_zero_from_another_working_directory(tmp_path):
    proc = llmsim("validate", str(REPO / "scenarios" / "sharegpt.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "KV capacity" in proc.stdout


@pytest.mark.slow
def test_list_names_every_scheduler_router_model_and_hardware_profile():
    proc = llmsim("list")
    assert proc.returncode == 0, proc.stderr
    words = set(proc.stdout.split())
    names = [*SCHEDULERS, *ROUTERS, *list_models(), *list_profiles()]
    assert {"aggressive", "conservative", "past-future", "oracle", "reserve-peak", "llama-2-7b", "h100-80g-sxm"} <= set(names)
    missing = [n for n in names if n not in words]
    assert not missing, missing


@pytest.mark.parametrize("what, names", [("schedulers", list(SCHEDULERS)), ("routers", list(ROUTERS)), ("models", list_models())])
def test_list_one_category_names_only_that_category(what, names, capsys):
    assert main(["list", what]) == 0
    words = set(capsys.readouterr().out.split())
    assert set(names) <= words
    others = {"schedulers": list_models(), "routers": list(SCHEDULERS), "models": list(ROUTERS)}[what]
    assert not set(others) & words


# ------------------------------------------------------------------------------------ bad input
def scenario_text(*, model="llama-2-7b", engine="", scheduler="", lengths=None, extra="", max_new="64") -> str:
    lengths = lengths or "    kind: fixed\n    input_tokens: 100\n    output_tokens: 20\n"
    return (
        "name: bad\n"
        f"model: {model}\n"
        "hardware: h100-80g-sxm\n"
        f"{engine}{scheduler}"
        "workload:\n"
        "  lengths:\n"
        f"{lengths}"
        "  arrivals:\n"
        "    kind: poisson\n"
        "    rate_per_s: 2\n"
        "  num_requests: 20\n"
        f"  max_new_tokens: {max_new}\n"
        f"{extra}"
    )


def _table_lengths(path: str) -> str:
    return f"    kind: table\n    path: {path}\n"


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def case_unknown_key(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(engine="engine:\n  mode: separate\n  blok_size: 16\n"))
    return ["run", str(p)], [f"{p}:6", "blok_size", "did you mean 'block_size'"]


def case_misspelt_past_future_knob(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(scheduler="scheduler:\n  kind: past-future\n  past-future:\n    headroom: 0.05\n    history_windw: 100\n"))
    return ["run", str(p)], [f"{p}:8", "scheduler.past-future.history_windw", "did you mean 'history_window'"]


def case_unknown_scheduler_kind_in_file(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(scheduler="scheduler:\n  kind: past_future\n"))
    return ["run", str(p)], [f"{p}:5", "unknown scheduler 'past_future'", "did you mean 'past-future'"]


def case_unknown_scheduler_kind_on_command_line(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text())
    return ["run", str(p), "--scheduler", "fcfs"], ["--scheduler fcfs", "unknown scheduler 'fcfs'", "past-future"]


def case_unknown_key_in_set_override(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text())
    return ["run", str(p), "--set", "engine.max_num_seq=8"], ["--set engine.max_num_seq=8", "did you mean 'max_num_seqs'"]


def case_unknown_key_in_a_section_set_whole(tmp: Path):
    # the error names the --set that wrote the section, not a line of the file it replaced
    p = _write(tmp, "s.yaml", scenario_text())
    return ["run", str(p), "--set", "engine={block_size: 16, max_num_seq: 8}"], [
        "--set engine={block_size: 16, max_num_seq: 8}", "unknown key 'engine.max_num_seq'", "did you mean 'max_num_seqs'"]


def case_missing_scenario_file(tmp: Path):
    return ["run", str(tmp / "nope.yaml")], [str(tmp / "nope.yaml"), "no such scenario file"]


def case_missing_trace_file(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(lengths=_table_lengths("data/missing.csv")))
    return ["run", str(p)], [str(tmp / "data" / "missing.csv"), "not found"]


def case_malformed_trace_value(tmp: Path):
    _write(tmp, "bad.csv", "num_prefill_tokens,num_decode_tokens\n100,20\n120,30\n\n90,2x5\n80,10\n")
    p = _write(tmp, "s.yaml", scenario_text(lengths=_table_lengths("bad.csv")))
    # line 5 (1-based, header is line 1, the blank line 4 still counts)
    return ["run", str(p)], [f"{tmp / 'bad.csv'}:5", "num_decode_tokens", "'2x5'"]


def case_trace_row_with_wrong_field_count(tmp: Path):
    _write(tmp, "bad.csv", "num_prefill_tokens,num_decode_tokens\n100,20\n120,30\n90,25,7\n")
    p = _write(tmp, "s.yaml", scenario_text(lengths=_table_lengths(str(tmp / "bad.csv"))))
    return ["run", str(p)], [f"{tmp / 'bad.csv'}:4", "2 fields", "found 3"]


def case_request_longer_than_kv_capacity(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(engine="engine:\n  kv_capacity_tokens: 100\n"))
    return ["run", str(p)], ["119 tokens of KV", "kv_capacity_tokens", "tensor_parallel", "filter"]


def case_request_longer_than_kv_capacity_on_validate(tmp: Path):
    argv, expected = case_request_longer_than_kv_capacity(tmp)
    return ["validate", *argv[1:]], expected


def case_model_too_big_for_one_gpu(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(model="llama-2-70b"))
    return ["validate", str(p)], ["llama-2-70b", "does not fit", "tensor_parallel"]


def case_duplicate_yaml_key(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(extra="model: llama-2-13b\n"))
    return ["run", str(p)], [f"{p}:14", "duplicate key 'model'", "first at line 2"]


def case_duplicate_nested_yaml_key(tmp: Path):
    p = _write(tmp, "s.yaml", scenario_text(engine="engine:\n  block_size: 16\n  block_size: 32\n"))
    return ["run", str(p)], [f"{p}:6", "duplicate key 'block_size'", "first at line 5"]


def case_invalid_yaml(tmp: Path):
    p = _write(tmp, "s.yaml", "name: bad\nmodel: [llama-2-7b\nhardware: h100-80g-sxm\n")
    return ["run", str(p)], [str(p), "invalid YAML"]


def case_invalid_yaml_indentation(tmp: Path):
    p = _write(tmp, "s.yaml", "name: bad\nengine:\n  block_size: 16\n   mode: mixed\n")
    return ["validate", str(p)], [f"{p}:4", "invalid YAML"]


BAD_INPUTS = [
    case_unknown_key,
    case_misspelt_past_future_knob,
    case_unknown_scheduler_kind_in_file,
    case_unknown_scheduler_kind_on_command_line,
    case_unknown_key_in_set_override,
    case_unknown_key_in_a_section_set_whole,
    case_missing_scenario_file,
    case_missing_trace_file,
    case_malformed_trace_value,
    case_trace_row_with_wrong_field_count,
    case_request_longer_than_kv_capacity,
    case_request_longer_than_kv_capacity_on_validate,
    case_model_too_big_for_one_gpu,
    case_duplicate_yaml_key,
    case_duplicate_nested_yaml_key,
    case_invalid_yaml,
    case_invalid_yaml_indentation,
]


def _check_one_error_line(returncode: int, stdout: str, stderr: str, expected: list[str]) -> None:
    assert returncode != 0
    assert "Traceback" not in stdout + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("llmsim: error: "), stderr
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.__name__.removeprefix("case_"))
def test_bad_input_gives_one_error_line_in_process(case, tmp_path, capsys):
    argv, expected = case(tmp_path)
    status = main(argv)
    out = capsys.readouterr()
    _check_one_error_line(status, out.out, out.err, expected)
    assert status == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c.__name__.removeprefix("case_"))
def test_bad_input_gives_one_error_line_and_no_traceback_in_a_subprocess(case, tmp_path):
    argv, expected = case(tmp_path)
    proc = llmsim(*argv, cwd=tmp_path)
    _check_one_error_line(proc.returncode, proc.stdout, proc.stderr, expected)
    assert proc.returncode == 2
    assert not (tmp_path / "results").exists()  # nothing written for a run that never started


def test_relative_trace_paths_resolve_against_the_scenario_folder_not_the_working_directory(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "lengths.csv").write_text("num_prefill_tokens,num_decode_tokens\n100,20\n50,7\n")
    sub = tmp_path / "scenarios"
    sub.mkdir()
    scenario = _write(sub, "s.yaml", scenario_text(lengths=_table_lengths("../data/lengths.csv")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(scenario), "--quiet", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    requests = pd.read_csv(tmp_path / "out" / "requests.csv")
    assert set(zip(requests["prompt_tokens"], requests["output_tokens"])) <= {(100, 20), (50, 7)}
    assert len(requests) == 20


def test_a_tmp_scenario_with_an_absolute_trace_path_validates(tmp_path, capsys):
    p = _write(tmp_path, "s.yaml", scenario_text(lengths=_table_lengths(str(SHAREGPT_CSV)), max_new="2048",
                                                 extra="  filter:\n    max_total_tokens: 4096\n"))
    assert main(["validate", str(p)]) == 0
    out = capsys.readouterr().out
    assert "ok " in out and "filter kept" in out


# ------------------------------------------------------------------------------------ odd input
# Each of these once ended in a Python traceback (or several lines) instead of one `llmsim: error:` line.


def test_trace_path_that_is_a_folder_gives_one_error_line(tmp_path, capsys):
    (tmp_path / "lengths").mkdir()
    p = _write(tmp_path, "s.yaml", scenario_text(lengths=_table_lengths("lengths")))
    status = main(["run", str(p)])
    _check_one_error_line(status, *capsys.readouterr(), [str(tmp_path / "lengths")])


@pytest.mark.parametrize("value", ["nan", "inf", "1e30"])
def test_non_finite_or_huge_token_count_in_a_trace_gives_one_error_line_naming_the_line(value, tmp_path, capsys):
    _write(tmp_path, "bad.csv", f"num_prefill_tokens,num_decode_tokens\n100,20\n90,{value}\n")
    p = _write(tmp_path, "s.yaml", scenario_text(lengths=_table_lengths("bad.csv")))
    status = main(["run", str(p)])
    _check_one_error_line(status, *capsys.readouterr(), [f"{tmp_path / 'bad.csv'}:3", "num_decode_tokens"])


def test_trace_that_is_not_utf8_text_gives_one_error_line(tmp_path, capsys):
    (tmp_path / "bad.csv").write_bytes(b"num_prefill_tokens,num_decode_tokens\n100,20\n\xff\xfe,7\n")
    p = _write(tmp_path, "s.yaml", scenario_text(lengths=_table_lengths("bad.csv")))
    status = main(["run", str(p)])
    _check_one_error_line(status, *capsys.readouterr(), [str(tmp_path / "bad.csv")])


def test_misspelt_key_inside_workload_lengths_gives_one_line_with_a_suggestion(tmp_path, capsys):
    lengths = "    kind: fixed\n    input_token: 100\n    output_tokens: 20\n"
    p = _write(tmp_path, "s.yaml", scenario_text(lengths=lengths))
    status = main(["run", str(p)])
    _check_one_error_line(status, *capsys.readouterr(), [f"{p}:7", "input_token", "did you mean 'input_tokens'"])
