"""Registries of the pluggable parts that are not schedulers: routers and cost models, by the
YAML `kind` that names them.

Declarations only: an entry names its implementation as "module:attribute", imported when it is
first loaded, so `llmsim.config` checks a scenario's kinds and `llmsim list` prints them without
importing the simulation. Adding a router or a cost model: its module, plus one `add` line here.
(Schedulers register themselves with `@register` in llmsim.schedulers.base, because their knobs,
declared beside the policy, are part of the scenario's schema.)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    kind: str
    target: str  # "module:attribute"
    summary: str


class Registry(dict):
    """kind -> Entry; `load(kind)` imports and returns the implementation."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def add(self, kind: str, target: str, summary: str) -> None:
        if kind in self:
            raise ValueError(f"{self.what} {kind!r} is registered twice")
        self[kind] = Entry(kind, target, summary)

    def load(self, kind: str):
        module, _, attribute = self[kind].target.partition(":")
        return getattr(importlib.import_module(module), attribute)


# A router class, called with the scenario's router random stream (numpy Generator).
ROUTERS = Registry("router")
ROUTERS.add("round-robin", "llmsim.cluster.router:RoundRobinRouter", "replicas in turn")
ROUTERS.add("random", "llmsim.cluster.router:RandomRouter", "uniformly random replica (seeded)")
ROUTERS.add("least-outstanding-tokens", "llmsim.cluster.router:LeastOutstandingTokensRouter",
            "replica with the fewest prefill + capped output tokens still to process")
ROUTERS.add("prefix-affinity", "llmsim.cluster.cache_router:PrefixAffinityRouter",
            "replica with the most cached blocks of the prompt (engine.prefix_caching), ties by least load")
ROUTERS.add("cache-aware", "llmsim.cluster.cache_router:CacheAwareRouter",
            "weighted score of prefix-cache hit and load (llm-d style; weights in cluster.cache_aware)")

# A builder (cost-model config, resolved model, resolved profile, tensor parallel degree) -> CostModel.
COST_MODELS = Registry("cost model")
COST_MODELS.add("analytic", "llmsim.costmodel.builders:analytic",
                "roofline per kernel from the hardware profile (a table profile: measured curves)")
COST_MODELS.add("constant", "llmsim.costmodel.builders:constant", "fixed time per step plus time per token (tests, queueing)")
