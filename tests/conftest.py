"""Shared fixtures."""

from __future__ import annotations

import pytest

from llmsim.schedulers import _compiled


@pytest.fixture(params=["numpy", "compiled"])
def peak_impl(request, monkeypatch):
    """Run a test once with the numpy admission rounds and once with the compiled kernels
    (llmsim/schedulers/_compiled.py); numba is in the test extras."""
    if request.param == "compiled":
        pytest.importorskip("numba", reason="numba is in the test extras; install with pip install -e '.[test]'")
    monkeypatch.setattr(_compiled, "_available", request.param == "compiled")
    return request.param
