"""Routers: which replica gets an arriving request.

A router sees the request's id (for its prompt length and cap through the engines' shared table)
and the replica engines' current loads; like a scheduler, it never sees a true output length.
Registered by their YAML `cluster.router` kind in llmsim.registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # typing only: routers read the engines through the calls below
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

    def routes_ahead(self, num_requests: int, num_replicas: int) -> np.ndarray:
        """The replica of each of the next `num_requests` requests (what `route` will answer)."""
        return (np.arange(num_requests) + self._next) % num_replicas


class RandomRouter:
    """A uniformly random replica, from the scenario's seeded `router` stream."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int:
        return int(self._rng.integers(len(replicas)))


class LoadBoard:
    """Bounds on each replica's outstanding tokens, as the replicas last published them, and the
    replicas whose bounds changed since (they publish when the router next reads the board)."""

    def __init__(self, num_replicas: int) -> None:
        # Python lists: the router scans a few dozen entries per arrival, where numpy's per-call
        # overhead costs more than the scan
        self.upper = [0] * num_replicas
        self.lower = [0] * num_replicas
        self.changed: list[ReplicaEngine] = []

    def refresh(self) -> None:
        for replica in self.changed:
            replica.publish_load()
        self.changed.clear()


class LeastOutstandingTokensRouter:
    """The replica with the fewest tokens still to process: prefill tokens not yet computed plus,
    for each unfinished request, its cap minus what it has generated (the cap, not the true length,
    which no router may see). Ties go to the lowest index.

    Replicas publish bounds on their load (exact, or during a fast-forwarded run its start and end
    values) on a `LoadBoard`; only replicas whose lower bound does not exceed the smallest upper
    bound can be the minimum, and only those are evaluated exactly. Same choice as a full scan."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.board: LoadBoard | None = None

    def attach(self, replicas: Sequence[ReplicaEngine]) -> None:
        self.board = LoadBoard(len(replicas))
        for r in replicas:
            r.load_board = self.board
            r.publish_load()

    def route(self, rid: int, replicas: Sequence[ReplicaEngine], now_s: float = 0.0) -> int:
        if self.board is None:
            self.attach(replicas)
        board = self.board
        if board.changed:
            board.refresh()
        lower = board.lower
        smallest_upper = min(board.upper)
        # the replicas that can be the minimum, lowest bound first (a stable sort: ties by index):
        # the first's exact load usually prunes the rest
        candidates = [i for i, low in enumerate(lower) if low <= smallest_upper]
        if len(candidates) == 1:
            return candidates[0]
        candidates.sort(key=lower.__getitem__)
        best = candidates[0]
        best_load = replicas[best].outstanding_tokens_at(now_s)
        for i in candidates[1:]:
            if lower[i] > best_load:
                break  # sorted by lower bound: no later replica can be at or below the best
            load = replicas[i].outstanding_tokens_at(now_s)
            if load < best_load or (load == best_load and i < best):
                best, best_load = i, load
        return best


def routes_ahead(router: Router, num_requests: int, num_replicas: int) -> np.ndarray | None:
    """The replica of each of the next requests, where it is known before they arrive (it depends
    on neither load nor draws: one replica, or a router with `routes_ahead`), else None."""
    if num_replicas == 1:
        return np.zeros(num_requests, dtype=np.int64)
    if hasattr(router, "routes_ahead"):
        return router.routes_ahead(num_requests, num_replicas)
    return None
