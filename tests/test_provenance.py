"""Provenance and terminal behaviour (issue 22, item 6).

- summary.json and sweep.json (and the sweep's Parquet metadata) record the llmsim version, the
  git commit when llmsim runs from its own checkout, the hardware profile's fidelity and the
  resolved seed; finding the commit never fails (no git, not a checkout, a hung git).
- Progress bars count what they say: with closed-loop re-sends, requests ended outnumber the
  requests, and the bar says "attempts" instead of showing 240/200; where the total is known
  there is an ETA.
- Output to a pipe or a file is not wrapped at 80 columns.
- Ctrl-C during `sweep --executor dask://local` prints one line and exits 130, writing nothing.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from rich.progress import Progress

import llmsim
from llmsim import provenance as prov
from llmsim.cli import main
from llmsim.cluster.simulation import simulate
from llmsim.config import scenario_from_dict
from llmsim.terminal import count_progress, make_console, run_progress_columns, run_progress_update

REPO = Path(__file__).resolve().parents[1]
SHAREGPT = str(REPO / "scenarios" / "sharegpt.yaml")
SMALL = ["--set", "workload.num_requests=20"]


def _head_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# ------------------------------------------------------------------------------------ provenance
def test_summary_json_records_version_commit_fidelity_and_the_resolved_seed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", SHAREGPT, *SMALL, "--seed", "5", "--quiet", "--out", str(out)]) == 0
    p = json.loads((out / "summary.json").read_text())["provenance"]
    assert p == {"llmsim_version": llmsim.__version__, "git_commit": _head_commit(), "hardware_fidelity": "analytic", "seed": 5}


def test_sweep_json_and_parquet_metadata_record_provenance_with_every_seed(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", SHAREGPT, *SMALL, "--loads", "2", "--schedulers", "aggressive", "--seeds", "2",
            "--executor", "local:1", "--no-plots", "--out", str(out)]
    assert main(argv) == 0
    p = json.loads((out / "sweep.json").read_text())["provenance"]
    assert p == {"llmsim_version": llmsim.__version__, "git_commit": _head_commit(), "hardware_fidelity": "analytic",
                 "seed": 0, "seeds": [0, 1]}
    assert pd.read_parquet(out / "sweep.parquet").attrs["llmsim_provenance"] == p
    assert set(pd.read_csv(out / "sweep.csv")["hardware_fidelity"]) == {"analytic"}


@pytest.fixture
def fresh_commit_cache():
    prov.git_commit.cache_clear()
    yield
    prov.git_commit.cache_clear()


@pytest.mark.parametrize("failure", [FileNotFoundError("git"), subprocess.TimeoutExpired("git", prov.GIT_TIMEOUT_S),
                                     PermissionError("git")], ids=["git-missing", "git-hangs", "git-not-runnable"])
def test_git_commit_is_none_when_git_cannot_answer(failure, monkeypatch, fresh_commit_cache):
    def run(*_a, **_k):
        raise failure

    monkeypatch.setattr(prov.subprocess, "run", run)
    assert prov.git_commit() is None
    assert prov.provenance("analytic", 3)["git_commit"] is None


def test_git_commit_is_none_outside_a_checkout_and_inside_another_projects_repository(tmp_path, fresh_commit_cache):
    package = tmp_path / "site-packages" / "llmsim"
    package.mkdir(parents=True)
    assert prov.git_commit(package) is None  # no repository at all
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("git cannot create a repository here")
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "other project"], capture_output=True, check=True)
    assert prov.git_commit(package) is None  # the repository is another project's, not llmsim's


# ------------------------------------------------------------------------------------ progress bars
def _rendered(bar: Progress) -> str:
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(bar.make_tasks_table(bar.tasks))
    return console.file.getvalue()


def _closed_loop_resending(resend: bool):
    data = {
        "name": "resends", "seed": 0, "model": "llama-2-7b", "hardware": "h100-80g-sxm",
        "cost_model": {"kind": "constant", "step_time_s": 0.01},
        "sla": {"ttft_s": 1e-6},  # no request can meet it: every one is re-sent until its attempts run out
        "workload": {"lengths": {"kind": "fixed", "input_tokens": 16, "output_tokens": 4},
                     "arrivals": {"kind": "closed-loop", "clients": 4, "resend_failed": resend, "max_attempts": 3},
                     "num_requests": 20, "max_new_tokens": 8},
    }
    return scenario_from_dict(data, REPO)


def test_run_bar_with_resends_counts_attempts_not_more_requests_than_there_are():
    loaded = _closed_loop_resending(True)
    bar = Progress(*run_progress_columns(loaded.scenario), console=Console(file=io.StringIO()))
    task = bar.add_task("sim", total=None, requests="all")
    seen = []
    update = run_progress_update(loaded.scenario, bar, task)
    simulate(loaded, progress=lambda done, total: (seen.append((done, total)), update(done, total)))
    assert seen[-1] == (60, 20)  # what simulate reports: 60 attempts ended for 20 requests
    text = _rendered(bar)
    assert "60 attempts ended (re-sends included) for 20 requests" in text
    assert "60/20" not in text


def test_run_bar_without_resends_shows_done_of_total_and_an_eta():
    loaded = _closed_loop_resending(False)
    bar = Progress(*run_progress_columns(loaded.scenario), console=Console(file=io.StringIO()))
    task = bar.add_task("sim", total=None, requests="all")
    update = run_progress_update(loaded.scenario, bar, task)
    update(5, 20)
    text = _rendered(bar)
    assert "5/20 requests ended" in text and "ETA" in text


def test_sweep_bar_counts_runs_with_an_eta():
    bar = count_progress(Console(file=io.StringIO()), "sweep", "runs")
    task = bar.add_task("", total=8)
    bar.update(task, completed=3)
    text = _rendered(bar)
    assert "3/8 runs" in text and "ETA" in text


# ------------------------------------------------------------------------------------ no wrapping
def test_output_to_a_pipe_or_file_is_not_wrapped_mid_phrase(tmp_path, capsys):
    assert make_console().width >= 200  # stdout is captured here: not a terminal
    assert main(["run", SHAREGPT, *SMALL, "--seed", "3", "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    model_line = next(line for line in lines if line.startswith("llama-2-7b on 1 x h100-80g-sxm"))
    assert len(model_line) > 80 and model_line.rstrip().endswith("seed 3")
    assert any(line.startswith("results: ") and "summary.json, scenario.yaml)" in line for line in lines)


# ------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_during_a_dask_local_sweep_prints_one_line_exits_130_and_writes_nothing(tmp_path, monkeypatch, capfd):
    pytest.importorskip("dask.distributed")
    from llmsim.executors import DaskExecutor

    def interrupted(self, fn, items, on_done=None):
        raise KeyboardInterrupt  # what Ctrl-C raises while the executor waits for its workers

    monkeypatch.setattr(DaskExecutor, "map", interrupted)
    out = tmp_path / "sweep"
    status = main(["sweep", SHAREGPT, *SMALL, "--loads", "1,2", "--executor", "dask://local", "--out", str(out)])
    captured = capfd.readouterr()
    assert status == 130
    assert captured.err == "llmsim: interrupted\n"
    assert "Traceback" not in captured.out
    assert not out.exists()


@pytest.mark.slow
def test_a_dask_local_cluster_interrupted_mid_map_closes_without_a_word(capfd):
    """A real LocalCluster: KeyboardInterrupt from inside `map` (as Ctrl-C raises it), then close:
    nothing on stderr from this process or the workers, and SIGINT handling restored."""
    pytest.importorskip("dask.distributed")
    from llmsim.executors import DaskExecutor

    before = signal.getsignal(signal.SIGINT)

    def on_done(_i, _result):
        raise KeyboardInterrupt

    ex = DaskExecutor("dask://local:1")
    with pytest.raises(KeyboardInterrupt):
        ex.map(abs, [-1, -2, -3], on_done)
    assert signal.getsignal(signal.SIGINT) is before
    ex.close()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
