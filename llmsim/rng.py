"""Named random streams derived from one scenario seed.

Every random consumer (workload lengths, arrivals, the random router, each replica's past-future
sampler) asks for its own stream by a stable name. Streams are independent of each other and of
the order in which they are created, so adding a consumer never changes another one's draws, and
the same seed always gives the same results.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """A numpy Generator for `name`, derived from `seed` (stable across processes and runs)."""
    # crc32, not hash(): Python salts str hashes per process, which would break determinism.
    key = zlib.crc32(name.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(key,)))
