"""Where relative paths in a scenario resolve: a path written in the scenario file is relative to
the file's folder; a path given on the command line with `--set` is relative to the working
directory, where it was typed. Both hold for the hardware profile, the model file and the
workload's trace or length table, whatever the working directory.
"""

from __future__ import annotations

from pathlib import Path

from llmsim.cli import main
from llmsim.config import load_scenario

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "hardware_profiles" / "h100-80g-sxm.yaml"

SCENARIO = """\
name: paths
model: llama-2-7b
hardware: {hardware}
workload:
  lengths: {{kind: table, path: {table}}}
  arrivals: {{kind: poisson, rate_per_s: 2}}
  num_requests: 10
  max_new_tokens: 64
"""
TABLE = "num_prefill_tokens,num_decode_tokens\n100,20\n50,7\n"


def _layout(tmp_path: Path) -> Path:
    """tmp/scenarios/s.yaml naming ../profiles/p.yaml and ../data/t.csv; tmp/cwd/ holds its own copies."""
    for folder in ("scenarios", "profiles", "data", "cwd/profiles", "cwd/data"):
        (tmp_path / folder).mkdir(parents=True)
    for base in (tmp_path, tmp_path / "cwd"):
        (base / "profiles" / "p.yaml").write_text(PROFILE.read_text())
        (base / "data" / "t.csv").write_text(TABLE)
    scenario = tmp_path / "scenarios" / "s.yaml"
    scenario.write_text(SCENARIO.format(hardware="../profiles/p.yaml", table="../data/t.csv"))
    return scenario


def test_paths_written_in_the_file_resolve_against_its_folder_from_any_working_directory(tmp_path, monkeypatch):
    scenario = _layout(tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")
    sc = load_scenario(scenario, ["workload.num_requests=5"]).scenario
    assert sc.hardware == str(tmp_path / "profiles" / "p.yaml")
    assert sc.workload.lengths.path == str(tmp_path / "data" / "t.csv")


def test_paths_given_with_set_resolve_against_the_working_directory(tmp_path, monkeypatch):
    scenario = _layout(tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")
    sc = load_scenario(scenario, ["hardware=profiles/p.yaml", "workload.lengths.path=data/t.csv"]).scenario
    assert sc.hardware == str(tmp_path / "cwd" / "profiles" / "p.yaml")
    assert sc.workload.lengths.path == str(tmp_path / "cwd" / "data" / "t.csv")


def test_a_whole_section_given_with_set_resolves_its_path_against_the_working_directory(tmp_path, monkeypatch):
    scenario = _layout(tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")
    sc = load_scenario(scenario, ["workload.lengths={kind: table, path: data/t.csv}"]).scenario
    assert sc.workload.lengths.path == str(tmp_path / "cwd" / "data" / "t.csv")


def test_the_documented_hardware_recipe_validates_from_the_repository_root(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = ["validate", "scenarios/sharegpt.yaml", "--set", "hardware=hardware_profiles/h100-80g-sxm.yaml"]
    assert main(argv) == 0, capsys.readouterr().err
    sc = load_scenario("scenarios/sharegpt.yaml", ["hardware=hardware_profiles/h100-80g-sxm.yaml"]).scenario
    assert sc.hardware == str(PROFILE)


def test_a_set_path_missing_from_the_working_directory_is_one_error_line(tmp_path, monkeypatch, capsys):
    scenario = _layout(tmp_path)
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["validate", str(scenario), "--set", "hardware=nowhere/p.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("llmsim: error:") and str(tmp_path / "cwd" / "nowhere") in err[0]
