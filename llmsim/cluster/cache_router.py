"""Cache-aware routers: send a request where its prompt's prefix is cached (engine.prefix_caching).

Both read, per replica, how many leading blocks of the request's prompt its prefix cache holds
(`ReplicaEngine.cached_prompt_blocks(rid, now_s)`, held by running requests or cached unreferenced, as
a router that mirrors the engines' caches from their KV events would know it) and its load
(`ReplicaEngine.outstanding_tokens_at(now_s)`: prefill tokens not yet computed plus each
unfinished request's cap minus its output so far). Neither sees a true output length.

- `prefix-affinity`: the replica with the most cached blocks of the prompt; ties (no cache
  anywhere included) go to the least loaded, then the lowest index.
- `cache-aware`: a weighted sum of two scores in [0, 1], highest wins (ties as above):
  hit_weight * cached blocks / prompt blocks + load_weight * (1 - load / largest load).
  This is llm-d's scheduler (a "prefix-cache scorer" and a load scorer, each normalised to [0, 1],
  summed with weights; Red Hat OpenShift AI's llm-d docs give the default profile as prefix cache
  weight 3, queue weight 2: the defaults here) and close to the vLLM production stack's load-aware
  routing (score = matched / prompt tokens - beta * relative load). SGLang's router instead
  switches between the two: shortest queue when loads are imbalanced, otherwise the longest
  prefix match above a threshold. Weights: `cluster.cache_aware` in the scenario YAML.

Without prefix caching, or for a workload without block hash ids, no replica has any block
cached: both reduce to least-outstanding-tokens routing (ties by index).

Units: blocks, tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class PrefixAffinityRouter:
    """The replica holding the longest cached prefix of the prompt; ties by least load."""

    def __init__(self, rng: np.random.Generator) -> None:
        pass

    def route(self, rid: int, replicas: Sequence, now_s: float = 0.0) -> int:
        best, best_key = 0, None
        for i, r in enumerate(replicas):
            key = (-r.cached_prompt_blocks(rid, now_s), r.outstanding_tokens_at(now_s), i)
            if best_key is None or key < best_key:
                best, best_key = i, key
        return best


class CacheAwareRouter:
    """Weighted score of cache hit and load (see the module docstring)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.hit_weight, self.load_weight = 3.0, 2.0

    def configure(self, cluster) -> None:
        """Weights from the scenario's `cluster.cache_aware`."""
        self.hit_weight = cluster.cache_aware.hit_weight
        self.load_weight = cluster.cache_aware.load_weight

    def route(self, rid: int, replicas: Sequence, now_s: float = 0.0) -> int:
        loads = [r.outstanding_tokens_at(now_s) for r in replicas]
        largest = max(loads)
        prompt_blocks = replicas[0].prompt_blocks(rid)
        best, best_key = 0, None
        for i, r in enumerate(replicas):
            hit = r.cached_prompt_blocks(rid, now_s) / prompt_blocks if prompt_blocks else 0.0
            idle = 1.0 - loads[i] / largest if largest > 0 else 1.0
            key = (-(self.hit_weight * hit + self.load_weight * idle), loads[i], i)
            if best_key is None or key < best_key:
                best, best_key = i, key
        return best
