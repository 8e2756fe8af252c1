"""llmsim: a discrete-event simulator of LLM serving clusters.

Python API (the CLI and notebooks use the same calls):

    from llmsim import load_scenario, simulate
    result = simulate(load_scenario("scenarios/sharegpt.yaml", scheduler="past-future"))
    result.summary["goodput_rps"], result.requests  # dict, pandas DataFrame
"""

__version__ = "0.1.0"

from .config import load_scenario, scenario_from_dict  # noqa: E402


def __getattr__(name: str):
    # `simulate` brings in the engine, the cost models and pandas: imported when first used, so
    # commands that only read a scenario (or print help) do not pay for them
    if name == "simulate":
        from .cluster.simulation import simulate

        return simulate
    raise AttributeError(f"module 'llmsim' has no attribute {name!r}")


__all__ = ["load_scenario", "scenario_from_dict", "simulate", "__version__"]
