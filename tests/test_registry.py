"""The registries of routers and cost models (llmsim.registry): every entry loads, the scenario
schema offers exactly the registered kinds, and reading a scenario imports no simulation code."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from llmsim.config import CostModelConfig
from llmsim.registry import COST_MODELS, ROUTERS, Registry


def test_every_registered_router_and_cost_model_loads():
    for kind in ROUTERS:
        assert hasattr(ROUTERS.load(kind), "route"), kind
    for kind in COST_MODELS:
        assert callable(COST_MODELS.load(kind)), kind


def test_the_cost_model_section_offers_exactly_the_registered_kinds():
    union = typing.get_args(typing.get_args(CostModelConfig)[0])  # Annotated[Union[...], ...]
    kinds = [typing.get_args(cls.model_fields["kind"].annotation)[0] for cls in union]  # Literal["..."]
    assert sorted(kinds) == sorted(COST_MODELS)


def test_a_kind_registered_twice_is_refused():
    reg = Registry("thing")
    reg.add("a", "m:x", "first")
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        reg.add("a", "m:y", "second")


def test_reading_a_scenario_imports_no_simulation_code():
    code = ("import sys, llmsim.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('llmsim.cluster', 'llmsim.costmodel', 'simpy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
