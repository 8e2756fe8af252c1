"""Physical features of one attention launch, shared by the fits (fit.py) and TableCostModel.

Both sides must compute the same features or a fitted coefficient means something else at
prediction time. Features are per layer, per GPU (heads already sharded): FLOPs and bytes moved.
The fitted forms are documented on `PrefillAttentionFit` and `DecodeAttentionFit` (profile.py).
"""

from __future__ import annotations


def prefill_pairs(chunk_tokens: float, prefix_tokens: float) -> float:
    """Causal query-key pairs of a chunk over a cached prefix (lower-right alignment):
    query i of the chunk sees the prefix and chunk tokens 1..i."""
    return chunk_tokens * (prefix_tokens + (chunk_tokens + 1) / 2.0)


def prefill_flops_per_pair(q_heads: int, head_dim: int) -> float:
    """QK^T and PV: 2 FLOPs each per head-dim element, per query head, per pair."""
    return 4.0 * q_heads * head_dim


def prefill_bytes(query_tokens: float, key_tokens: float, q_heads: int, kv_heads: int, head_dim: int, dtype_bytes: int) -> float:
    """Read Q and write O for the query tokens, read K and V once for the key tokens."""
    return (2.0 * query_tokens * q_heads + 2.0 * key_tokens * kv_heads) * head_dim * dtype_bytes


def kv_bytes_per_token(kv_heads: int, head_dim: int, dtype_bytes: int) -> float:
    """K and V of one cached token in one layer: what decode attention streams per context token."""
    return 2.0 * kv_heads * head_dim * dtype_bytes
