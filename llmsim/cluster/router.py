"""Routers: which replica gets an arriving request.

A router sees the request's id (for its prompt length and cap through the engines' shared table)
and the replica engines' current loads; like a scheduler, it never sees a true output length.
Registry keyed by the YAML `cluster.router` string.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from .engine import ReplicaEngine


class Router(Protocol):
    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int: ...


class RoundRobinRouter:
    """Replicas in turn, whatever their load."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._next = 0

    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int:
        i = self._next
        self._next = (i + 1) % len(replicas)
        return i


class RandomRouter:
    """A uniformly random replica, from the scenario's seeded `router` stream."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int:
        return int(self._rng.integers(len(replicas)))


class LeastOutstandingTokensRouter:
    """The replica with the fewest tokens still to process: prefill tokens not yet computed plus,
    for each unfinished request, its cap minus what it has generated (the cap, not the true length,
    which no router may see). Ties go to the lowest index."""

    def __init__(self, rng: np.random.Generator) -> None:
        pass

    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int:
        best, best_load = 0, None
        for i, r in enumerate(replicas):
            load = r.outstanding_tokens_at(now_s)
            if best_load is None or load < best_load:
                best, best_load = i, load
        return best


ROUTERS: dict[str, Callable[[np.random.Generator], Router]] = {
    "round-robin": RoundRobinRouter,
    "random": RandomRouter,
    "least-outstanding-tokens": LeastOutstandingTokensRouter,
}

ROUTER_SUMMARIES = {
    "round-robin": "replicas in turn",
    "random": "uniformly random replica (seeded)",
    "least-outstanding-tokens": "replica with the fewest prefill + capped output tokens still to process",
}
