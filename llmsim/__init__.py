"""llmsim: a discrete-event simulator of LLM serving clusters.

Python API (the CLI and notebooks use the same calls):

    from llmsim import load_scenario, simulate
    result = simulate(load_scenario("scenarios/sharegpt.yaml", scheduler="past-future"))
    result.summary["goodput_rps"], result.requests  # dict, pandas DataFrame
"""

__version__ = "0.1.0"

from .config import load_scenario, scenario_from_dict  # noqa: E402
from .cluster.simulation import simulate  # noqa: E402

__all__ = ["load_scenario", "scenario_from_dict", "simulate", "__version__"]
