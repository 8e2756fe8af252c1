"""The notebooks in notebooks/ run top to bottom at their small size (LLMSIM_NOTEBOOK_SMALL=1),
each within a minute, and are committed with their outputs stripped.

They run in a Jupyter kernel of this very interpreter: nbclient starts the `python3` kernel,
which jupyter_client launches with `sys.executable` when ipykernel is importable here (the `test`
extra installs it), so a clean virtual environment needs no `ipykernel install`. Figures go to a
temporary folder (LLMSIM_FIGURES_DIR), not to docs/figures/.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED_FIGURES = {
    "goodput_vs_load.ipynb": {"goodput_vs_load.png", "sla_attainment_vs_load.png"},
    "scheduler_deep_dive.ipynb": {"scheduler_deep_dive.png", "scheduler_latency_cdfs.png"},
    "capacity_planning.ipynb": {"capacity_planning.png"},
    "prefix_caching.ipynb": {"prefix_caching.png"},
}
BUDGET_S = 60


def test_every_notebook_is_covered():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(EXPECTED_FIGURES)


@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "LLMSIM_NOTEBOOK_SMALL" in code[0].source  # the size parameter comes first


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_runs_at_small_size(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("LLMSIM_FIGURES_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=BUDGET_S * 2, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    assert elapsed < BUDGET_S, f"{name} took {elapsed:.0f} s at the small size"
    written = {p.name for p in tmp_path.glob("*.png")}
    assert EXPECTED_FIGURES[name] <= written
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
