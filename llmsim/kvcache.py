"""Paged KV-cache accounting for one replica: GPU blocks and bounded host swap space.

Blocks are counted, not named: llmsim needs how many blocks are free, not which ones (with
`engine.prefix_caching`, llmsim.prefix_cache names the cacheable prompt blocks). A request sized
for t tokens of KV holds ceil(t / block_size) blocks. The allocator
refuses to go above capacity or below zero, so a scheduling bug surfaces as an exception at the
step that caused it instead of as silently wrong memory figures.
"""

from __future__ import annotations


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold `tokens` tokens of KV."""
    return -(-tokens // block_size)


class BlockAllocator:
    """GPU KV blocks of one replica."""

    def __init__(self, total_blocks: int, block_size: int) -> None:
        if total_blocks <= 0 or block_size <= 0:
            raise ValueError("total_blocks and block_size must be positive")
        self.total_blocks = total_blocks
        self.block_size = block_size
        # both kept, as plain attributes: the engine reads free blocks several times a cycle
        self.used_blocks = 0
        self.free_blocks = total_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.total_blocks * self.block_size

    def allocate(self, blocks: int) -> None:
        if blocks > self.free_blocks:
            raise RuntimeError(f"KV over-allocation: {blocks} blocks asked, {self.free_blocks} free")
        self.used_blocks += blocks
        self.free_blocks -= blocks

    def free(self, blocks: int) -> None:
        if blocks > self.used_blocks:
            raise RuntimeError(f"KV double free: {blocks} blocks freed, {self.used_blocks} in use")
        self.used_blocks -= blocks
        self.free_blocks += blocks

    def release(self, rid: int, blocks: int) -> None:
        """Request `rid` frees its `blocks` blocks (the prefix-caching allocator keeps cached ones)."""
        self.free(blocks)


class SwapSpace:
    """Host memory for swapped-out KV blocks, bounded in bytes per GPU (vLLM's --swap-space)."""

    def __init__(self, capacity_bytes: float, block_bytes: float) -> None:
        self.capacity_blocks = int(capacity_bytes // block_bytes) if block_bytes > 0 else 0
        self.block_bytes = block_bytes
        self.used_blocks = 0

    def fits(self, blocks: int) -> bool:
        return self.used_blocks + blocks <= self.capacity_blocks

    def put(self, blocks: int) -> None:
        if not self.fits(blocks):
            raise RuntimeError("swap space over-allocation")
        self.used_blocks += blocks

    def take(self, blocks: int) -> None:
        if blocks > self.used_blocks:
            raise RuntimeError("swap space double free")
        self.used_blocks -= blocks
