"""KV-cache capacity of one replica, in tokens, derived from GPU memory (docs/schedulers.md §1).

capacity_tokens = (GPU memory x memory fraction - weights per GPU - activation reserve)
                  / KV bytes per token per GPU, rounded down to whole blocks.
Memory is in GiB (2^30 bytes) as profiles and configs state it; everything else is bytes.
"""

from __future__ import annotations

from llmsim.costmodel.catalog import ModelArch
from llmsim.costmodel.profile import HardwareProfile
from llmsim.errors import LlmsimError

_GIB = 2**30


def kv_bytes_per_token_per_gpu(model: ModelArch, tensor_parallel: int = 1) -> int:
    """K and V of one token across all layers, on one GPU of a TP group."""
    return model.kv_bytes_per_token_per_gpu(tensor_parallel)


def derive_kv_capacity_tokens(
    model: ModelArch,
    profile: HardwareProfile,
    tensor_parallel: int,
    gpu_memory_fraction: float,
    activation_reserve_gib: float,
    block_size: int,
) -> int:
    """Tokens of KV cache a replica holds, a multiple of `block_size`.

    Raises LlmsimError when the weights and the activation reserve leave no room for one block,
    saying by how much the budget is exceeded and which setting to change.
    """
    if not 0.0 < gpu_memory_fraction <= 1.0:
        raise LlmsimError(f"engine.gpu_memory_fraction must be in (0, 1], got {gpu_memory_fraction}")
    if activation_reserve_gib < 0:
        raise LlmsimError(f"engine.activation_reserve_gib must be >= 0, got {activation_reserve_gib}")
    if block_size <= 0:
        raise LlmsimError(f"engine.block_size must be > 0, got {block_size}")
    model.check_tensor_parallel(tensor_parallel)

    budget_bytes = profile.hardware.memory_gib * _GIB * gpu_memory_fraction
    weight_bytes = model.weight_bytes_per_gpu(tensor_parallel)
    reserve_bytes = activation_reserve_gib * _GIB
    free_bytes = budget_bytes - weight_bytes - reserve_bytes
    per_token_bytes = model.kv_bytes_per_token_per_gpu(tensor_parallel)
    capacity_tokens = int(max(free_bytes, 0.0) // per_token_bytes) // block_size * block_size
    if capacity_tokens <= 0:
        shortfall_gib = (weight_bytes + reserve_bytes + block_size * per_token_bytes - budget_bytes) / _GIB
        raise LlmsimError(
            f"{model.name} does not fit on {profile.hardware.name} at tensor_parallel={tensor_parallel}: "
            f"weights ({weight_bytes / _GIB:.1f} GiB per GPU) plus activation reserve "
            f"({activation_reserve_gib:g} GiB) exceed gpu_memory_fraction x memory "
            f"({gpu_memory_fraction:g} x {profile.hardware.memory_gib:g} GiB) by {shortfall_gib:.1f} GiB "
            "(counting one KV block); raise cluster.tensor_parallel or engine.gpu_memory_fraction, "
            "or set engine.kv_capacity_tokens"
        )
    return capacity_tokens
