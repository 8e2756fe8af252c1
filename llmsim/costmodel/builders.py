"""Builders of the registered cost models (llmsim.registry.COST_MODELS): a scenario's
`cost_model` section, the resolved model architecture and hardware profile, and the tensor
parallel degree, to a CostModel. Units: seconds.
"""

from __future__ import annotations

from .constant import ConstantCostModel
from .profile import Overheads
from .tables import cost_model_for


def analytic(config, model, profile, tensor_parallel: int):
    """The profile's cost model (analytic, or table for a measured profile), with the section's
    engine overheads where it sets them."""
    if config.step_overhead_s is not None or config.per_seq_overhead_s is not None:
        o = profile.overheads
        new = Overheads(step_s=o.step_s if config.step_overhead_s is None else config.step_overhead_s,
                        per_seq_s=o.per_seq_s if config.per_seq_overhead_s is None else config.per_seq_overhead_s)
        profile = profile.model_copy(update={"overheads": new})
    return cost_model_for(model, profile, tensor_parallel)


def constant(config, model, profile, tensor_parallel: int):
    """A fixed step time plus a time per token; swaps over the profile's host link."""
    return ConstantCostModel(config.step_time_s, config.per_token_s, profile.hardware.host_link_gb_per_s)
