"""Results folders never mix runs, output paths are checked before any work, `trace convert` guards
its input and recorded timestamps (issue 22, items 1-3).

Every refusal is checked the same way: exit status 2, exactly one `llmsim: error:` line on stderr
naming the path and the problem, no traceback, nothing simulated (the run functions are replaced by
ones that fail the test) and the files already there byte-for-byte intact. Runs use a tiny scenario
(fixed lengths, constant step time, 20-50 requests) so each test takes well under two seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llmsim import outputs
from llmsim.cli import main

REPO = Path(__file__).resolve().parents[1]
SHAREGPT = REPO / "scenarios" / "sharegpt.yaml"


def tiny_scenario(folder: Path, name: str = "tiny", num_requests: int = 30) -> Path:
    data = {
        "name": name, "seed": 0, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "engine": {"max_num_seqs": 4, "kv_capacity_tokens": 4096},
        "cost_model": {"kind": "constant", "step_time_s": 0.01},
        "scheduler": {"kind": "aggressive"},
        "workload": {"lengths": {"kind": "fixed", "input_tokens": 16, "output_tokens": 4},
                     "arrivals": {"kind": "poisson", "rate_per_s": 20.0},
                     "num_requests": num_requests, "max_new_tokens": 4},
        "sla": {"ttft_s": 0.05},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def scenario(tmp_path) -> Path:
    return tiny_scenario(tmp_path / "scenarios")


def no_work(monkeypatch) -> None:
    """Make every entry point that would simulate fail the test: refusals must come first."""
    def refuse(*_a, **_k):
        raise AssertionError("simulated although the output path was refused")

    import llmsim.capacity
    import llmsim.cluster.simulation
    import llmsim.sweep

    monkeypatch.setattr(llmsim.cluster.simulation, "simulate", refuse)
    for name in ("run_sweep", "compare_schedulers"):
        monkeypatch.setattr(llmsim.sweep, name, refuse)
    monkeypatch.setattr(llmsim.capacity, "find_capacity", refuse)


def one_error_line(status: int, capsys, *fragments: str) -> str:
    out = capsys.readouterr()
    assert status == 2, out
    assert "Traceback" not in out.out + out.err
    lines = out.err.splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("llmsim: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under `folder` (relative name -> bytes, None for a folder), to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def run(scenario: Path, out: Path, *extra: str) -> int:
    return main(["run", str(scenario), "--quiet", "--out", str(out), *extra])


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# ------------------------------------------------------------------------------ 1. one run per folder
def test_run_refuses_a_non_empty_folder_and_leaves_it_intact(scenario, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(scenario, out, "--steps") == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    capsys.readouterr()
    no_work(monkeypatch)
    one_error_line(run(scenario, out), capsys, str(out), "not empty", "--overwrite")
    assert snapshot(out) == before


def test_overwrite_removes_only_the_runs_own_files(scenario, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(scenario, out, "--steps") == 0
    for figure in ("timeseries.png", "latency_cdf.png"):  # what `llmsim plot` draws from this run
        (out / figure).write_bytes(b"\x89PNG old figure")
    (out / "notes.txt").write_text("mine")
    (out / "extra").mkdir()
    first = summary(out)["run_id"]
    assert run(scenario, out, "--overwrite", "--set", "workload.num_requests=20") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["extra", "notes.txt", "requests.csv", "scenario.yaml", "summary.json"]  # old steps.csv and figures gone
    assert (out / "notes.txt").read_text() == "mine"
    s = summary(out)
    assert s["run_id"] != first and len(s["run_id"]) == 32 and s["num_requests"] == 20
    assert sorted(s["files"]) == ["requests.csv", "scenario.yaml"]
    assert len(pd.read_csv(out / "requests.csv")) == 20


def test_a_folder_filled_while_the_run_simulated_is_still_refused(scenario, tmp_path, capsys, monkeypatch):
    import llmsim.cluster.simulation as simulation

    out, real = tmp_path / "out", simulation.simulate

    def simulate_while_another_run_writes(*a, **k):
        result = real(*a, **k)
        out.mkdir()
        (out / "requests.csv").write_text("another run's\n")
        return result

    monkeypatch.setattr(simulation, "simulate", simulate_while_another_run_writes)
    one_error_line(run(scenario, out), capsys, str(out), "not empty", "changed while this command ran")
    assert snapshot(out) == {"requests.csv": b"another run's\n"}


def test_run_id_is_fresh_each_run_and_the_simulation_stays_deterministic(scenario, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(scenario, a) == 0 and run(scenario, b) == 0
    sa, sb = summary(a), summary(b)
    assert sa.pop("run_id") != sb.pop("run_id")
    assert sa == sb  # same numbers, same file digests
    assert (a / "requests.csv").read_bytes() == (b / "requests.csv").read_bytes()


def test_plot_refuses_a_steps_csv_left_by_another_run(scenario, tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(scenario, a, "--steps") == 0
    assert run(scenario, b, "--set", "workload.num_requests=20") == 0
    shutil.copy(a / "steps.csv", b / "steps.csv")  # what an earlier run in the same folder used to leave
    before = snapshot(b)
    capsys.readouterr()
    one_error_line(main(["plot", str(b)]), capsys, str(b / "steps.csv"), summary(b)["run_id"], "another run")
    assert snapshot(b) == before  # no figure drawn under the wrong title


def test_plot_refuses_a_requests_csv_from_another_run(scenario, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(scenario, a, "--seed", "1") == 0 and run(scenario, b) == 0
    shutil.copy(a / "requests.csv", b / "requests.csv")
    capsys.readouterr()
    one_error_line(main(["plot", str(b)]), capsys, str(b / "requests.csv"), "SHA-256")
    assert not (b / "latency_cdf.png").exists()


def test_plot_draws_a_folder_from_one_run_and_notes_an_unrecorded_older_one(scenario, tmp_path, capsys):
    from llmsim.plots import check_run_folder

    out = tmp_path / "out"
    assert run(scenario, out) == 0
    assert check_run_folder(out) == []  # every file from the one run summary.json records
    s = summary(out)
    del s["run_id"], s["files"]  # a folder written before run ids
    (out / "summary.json").write_text(json.dumps(s))
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    assert "records no run id" in capsys.readouterr().out
    assert (out / "latency_cdf.png").exists()


def sweep(scenario: Path, out: Path, loads: str, *extra: str) -> int:
    return main(["sweep", str(scenario), "--schedulers", "aggressive", "--loads", loads, "--executor", "local:1",
                 "--out", str(out), *extra])


def test_sweep_no_plots_cannot_leave_old_figures_beside_a_new_table(scenario, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sw"
    assert sweep(scenario, out, "10,20", "--no-plots") == 0
    for figure in outputs.SWEEP.owned:  # what a sweep with figures (or `llmsim plot`) leaves: 4 figures
        if figure.endswith(".png"):
            (out / figure).write_bytes(b"\x89PNG old figure")
    before = snapshot(out)
    assert {"goodput.png", "sweep.csv", "sweep.json"} <= set(before)
    capsys.readouterr()
    with monkeypatch.context() as m:
        no_work(m)
        one_error_line(sweep(scenario, out, "10", "--no-plots"), capsys, str(out), "not empty", "--overwrite")
    assert snapshot(out) == before
    (out / "notes.txt").write_text("mine")
    assert sweep(scenario, out, "10", "--no-plots", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sweep.csv", "sweep.json", "sweep.parquet"]
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["rows"] == 1 and len(pd.read_csv(out / "sweep.csv")) == 1
    assert pd.read_parquet(out / "sweep.parquet").attrs["llmsim_run_id"] == meta["run_id"]
    assert sorted(meta["files"]) == ["sweep.csv", "sweep.parquet"]


def test_plot_refuses_a_sweep_table_from_another_run(scenario, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert sweep(scenario, a, "10", "--no-plots") == 0 and sweep(scenario, b, "20", "--no-plots") == 0
    shutil.copy(a / "sweep.csv", b / "sweep.csv")
    capsys.readouterr()
    one_error_line(main(["plot", str(b)]), capsys, str(b / "sweep.csv"), "another run")
    assert not (b / "goodput.png").exists()


def test_overwrite_never_mixes_two_commands_results(scenario, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sw"
    assert sweep(scenario, out, "10", "--no-plots") == 0
    before = snapshot(out)
    capsys.readouterr()
    no_work(monkeypatch)
    one_error_line(run(scenario, out, "--overwrite"), capsys, str(out), "llmsim sweep results", "another --out")
    assert snapshot(out) == before


def test_capacity_refuses_a_non_empty_folder_and_records_a_run_id(scenario, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cap"
    argv = ["capacity", str(scenario), "--seeds", "1", "--executor", "local:1", "--rel-tol", "0.5", "--out", str(out)]
    assert main(argv) == 0
    meta = json.loads((out / "capacity.json").read_text())
    assert len(meta["run_id"]) == 32 and meta["files"]["probes.csv"] == outputs.digest(out / "probes.csv")
    before = snapshot(out)
    capsys.readouterr()
    with monkeypatch.context() as m:
        no_work(m)
        one_error_line(main(argv), capsys, str(out), "not empty")
    assert snapshot(out) == before


def test_compare_refuses_an_existing_file_and_its_own_scenario(scenario, tmp_path, capsys, monkeypatch):
    no_work(monkeypatch)
    table = tmp_path / "cmp.csv"
    table.write_text("old\n")
    before = snapshot(tmp_path)
    base = ["compare", str(scenario), "--executor", "local:1", "--out"]
    one_error_line(main([*base, str(table)]), capsys, str(table), "exists", "--overwrite")
    one_error_line(main([*base, str(scenario), "--overwrite"]), capsys, str(scenario), "input file")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ 2. paths checked first
def _under_a_file(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "out", [str(tmp / "plain"), "is a file, not a folder"]


def _missing_parent(tmp: Path) -> tuple[Path, list[str]]:
    return tmp / "typo" / "out", [str(tmp / "typo"), "does not exist"]


def _name_too_long(tmp: Path) -> tuple[Path, list[str]]:
    return tmp / ("x" * 300), ["name too long", "300 bytes"]


def _is_a_file(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "plain").write_text("x")
    return tmp / "plain", [str(tmp / "plain"), "is a file"]


BAD_PATHS = [_under_a_file, _missing_parent, _name_too_long, _is_a_file]
COMMANDS = {
    "run": lambda sc, out: ["run", str(sc), "--quiet", "--out", str(out)],
    "sweep": lambda sc, out: ["sweep", str(sc), "--loads", "10", "--out", str(out)],
    "capacity": lambda sc, out: ["capacity", str(sc), "--seeds", "1", "--out", str(out)],
    "compare": lambda sc, out: ["compare", str(sc), "--out", str(out)],
}


@pytest.mark.parametrize("bad", BAD_PATHS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_output_path_is_one_line_before_any_work(command, bad, scenario, tmp_path, capsys, monkeypatch):
    if command == "compare" and bad is _is_a_file:
        pytest.skip("compare writes a file: an existing one is the --overwrite case")
    work = tmp_path / "work"
    work.mkdir()
    out, fragments = bad(work)
    before = snapshot(tmp_path)
    no_work(monkeypatch)
    one_error_line(main(COMMANDS[command](scenario, out)), capsys, *fragments)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unwritable_folder_is_one_line_before_any_work(command, scenario, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(outputs, "_can_write", lambda folder: Path(folder) != locked)  # root may write anywhere
    no_work(monkeypatch)
    one_error_line(main(COMMANDS[command](scenario, locked / "out")), capsys, str(locked / "out"), "cannot write in", "permission")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write in a read-only folder")
def test_a_read_only_folder_is_refused_for_real(scenario, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        no_work(monkeypatch)
        one_error_line(run(scenario, locked / "out"), capsys, str(locked / "out"), "cannot write in")
    finally:
        locked.chmod(0o755)


def test_results_is_the_one_parent_created_on_demand(scenario, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(scenario, Path("results") / "mine") == 0
    assert (tmp_path / "results" / "mine" / "summary.json").exists()


@pytest.mark.parametrize("name, expected", [
    ("../..", "scenario"), ("../etc", "etc"), ("a/../b", "a-..-b"), ("/etc/passwd", "etc-passwd"), ("a/b\\c d", "a-b-c-d"), (".hidden", "hidden"), ("..", "scenario"),
    ("", "scenario"), ("ok-name_1.2", "ok-name_1.2"), ("x" * 300, "x" * 100),
])
def test_safe_name_makes_one_harmless_path_component(name, expected):
    got = outputs.safe_name(name)
    assert got == expected and "/" not in got and got not in (".", "..") and not got.startswith(".")


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_scenario_name_never_writes_outside_results(command, scenario, tmp_path, capsys, monkeypatch):
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    argv = {"run": ["run", str(scenario), "--quiet"],
            "sweep": ["sweep", str(scenario), "--schedulers", "aggressive", "--loads", "10", "--executor", "local:1", "--no-plots"]}[command]
    assert main([*argv, "--set", "name=../../.."]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path / "scenarios"]
    assert written and all(work / "results" in p.parents for p in written), written
    assert [p.name for p in (work / "results").iterdir()] == [{"run": "aggressive-seed0", "sweep": "sweep-..-..-.."}[command]]


# ------------------------------------------------------------------------------ 3. trace convert
TRACE = "arrival_s,input_tokens,output_tokens\n0.0,10,5\n0.5,20,6\n2.0,30,7\n"


def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys, monkeypatch):
    src = tmp_path / "t.csv"
    src.write_text(TRACE)
    one_error_line(main(["trace", "convert", str(src), str(src)]), capsys, str(src), "input file")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.csv").symlink_to(src)
    one_error_line(main(["trace", "convert", "t.csv", "link.csv"]), capsys, "link.csv", "input file", "t.csv")
    assert src.read_text() == TRACE


def test_convert_poisson_rate_on_recorded_timestamps_needs_replace_timestamps(tmp_path, capsys):
    src, out = tmp_path / "t.csv", tmp_path / "o.csv"
    src.write_text(TRACE)
    one_error_line(main(["trace", "convert", str(src), str(out), "--poisson-rate", "2"]), capsys,
                   str(src), "recorded timestamps", "add --replace-timestamps")
    assert not out.exists()
    assert main(["trace", "convert", str(src), str(out), "--poisson-rate", "2", "--replace-timestamps"]) == 0
    assert "replace the recorded timestamps" in capsys.readouterr().out
    got = pd.read_csv(out)
    assert list(got["input_tokens"]) == [10, 20, 30] and list(got["arrival_s"]) != [0.0, 0.5, 2.0]


@pytest.mark.parametrize("argv, fragments", [
    (["--replace-timestamps"], ["--replace-timestamps needs --poisson-rate"]),
    (["--poisson-rate", "0", "--replace-timestamps"], ["--poisson-rate 0", "positive"]),
])
def test_convert_flag_mistakes_are_one_line(argv, fragments, tmp_path, capsys):
    src = tmp_path / "t.csv"
    src.write_text(TRACE)
    one_error_line(main(["trace", "convert", str(src), str(tmp_path / "o.csv"), *argv]), capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


@pytest.mark.parametrize("bad", [_missing_parent, _under_a_file, _name_too_long], ids=lambda f: f.__name__.strip("_"))
def test_convert_checks_its_output_path_first(bad, tmp_path, capsys):
    src = tmp_path / "t.csv"
    src.write_text(TRACE)
    out, fragments = bad(tmp_path)
    before = snapshot(tmp_path)
    one_error_line(main(["trace", "convert", str(src), str(out) + ".csv"]), capsys, fragments[0])
    assert snapshot(tmp_path) == before
