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


# SplitMix64 constants (Steele, Lea & Flood, OOPSLA 2014; java.util.SplittableRandom)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


class CounterStream:
    """A random stream whose draws are as cheap inside a compiled kernel as in numpy: SplitMix64.

    Draw i (counting from 1) is a fixed bit mix of key + i * gamma (mod 2**64), so numpy makes k
    draws at once from a range of counters, and a numba kernel (llmsim.schedulers._compiled) makes
    the same draws one by one from the same `state` array. Both use the same integer operations and
    the same conversion to a double, so they give identical numbers. Past-future draws from one of
    these instead of numpy's Generator because handing a Generator to numba costs about 5 us a call,
    more than the admission round it serves (docs/performance.md). SplitMix64 passes BigCrush and
    is java.util.SplittableRandom's generator; the key comes from the scenario seed (`from_generator`).
    """

    __slots__ = ("state",)

    def __init__(self, key: int) -> None:
        self.state = np.array([key], dtype=np.uint64)  # key + (draws so far) * gamma

    @classmethod
    def from_generator(cls, rng: np.random.Generator) -> "CounterStream":
        return cls(int(rng.integers(0, 2**64, dtype=np.uint64)))

    def random(self, size: int | tuple[int, ...]) -> np.ndarray:
        """Uniform doubles in [0, 1) of shape `size`, filled in C order: 53 high bits of each draw."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        count = 1
        for d in shape:
            count *= d
        # array arithmetic wraps modulo 2**64 silently (numpy scalars would warn)
        s = self.state[0] + _GAMMA * np.arange(1, count + 1, dtype=np.uint64)
        if count:
            self.state[0] = s[-1]
        z = (s ^ (s >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
        return ((z >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53).reshape(shape)

    def skip(self, count: int) -> None:
        """Move past `count` draws without making them (as a compiled round that needs none does)."""
        self.state[0] = (int(self.state[0]) + count * int(_GAMMA)) % 2**64

    def integers(self, low: int, high: int, size: int) -> np.ndarray:
        """Integers uniform in [low, high), one draw each: low + floor(u * (high - low))."""
        width = high - low
        return low + np.minimum((self.random(size) * width).astype(np.int64), width - 1)
