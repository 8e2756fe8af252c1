"""Builders of the registered cost models (llmsim.registry.COST_MODELS): a scenario's
`cost_model` section, the resolved model architecture and hardware profile, and the tensor
parallel degree, to a CostModel. Units: seconds.
"""

from __future__ import annotations

from .constant import ConstantCostModel
from .tables import cost_model_for

# scenario key -> profile `overheads` key; a scenario value replaces the profile's
_OVERHEAD_KEYS = (("overhead_preset", "preset"), ("step_overhead_s", "step_s"),
                  ("per_seq_overhead_s", "per_seq_s"), ("sampling_bytes_per_logit", "sampling_bytes_per_logit"))


def analytic(config, model, profile, tensor_parallel: int):
    """The profile's cost model (analytic, or table for a measured profile), with the section's
    engine overheads where it sets them. A scenario preset replaces the profile's preset and the
    profile's own numbers (they refined the profile's preset, not this one)."""
    update = {dst: getattr(config, src) for src, dst in _OVERHEAD_KEYS if getattr(config, src) is not None}
    if update:
        base = {} if "preset" in update else profile.overheads.model_dump()
        overheads = type(profile.overheads).model_validate(base | update)
        profile = profile.model_copy(update={"overheads": overheads})
    return cost_model_for(model, profile, tensor_parallel)


def constant(config, model, profile, tensor_parallel: int):
    """A fixed step time plus a time per token; swaps over the profile's host link."""
    return ConstantCostModel(config.step_time_s, config.per_token_s, profile.hardware.host_link_gb_per_s)
