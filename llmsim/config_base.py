"""The strict pydantic base of every scenario section (llmsim.config, llmsim.config_workload)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # allow_inf_nan=False: .inf and .nan are refused in every number (a rate, an SLA, a length)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
