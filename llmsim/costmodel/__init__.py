"""Cost models: the wall time of one engine iteration for a batch shape, in seconds.

Public pieces: the engine-facing interface (`BatchShape`, `CostModel`), the model catalog
(`ModelArch`, `load_model`, `list_models`), hardware profiles (`HardwareProfile`, `load_profile`,
`list_profiles`), the cost models (`AnalyticCostModel`, `ConstantCostModel`) and the KV capacity
derivation (`derive_kv_capacity_tokens`).
"""

from llmsim.costmodel.analytic import AnalyticCostModel
from llmsim.costmodel.base import BatchShape, CostModel
from llmsim.costmodel.capacity import derive_kv_capacity_tokens, kv_bytes_per_token_per_gpu
from llmsim.costmodel.catalog import ModelArch, list_models, load_model
from llmsim.costmodel.constant import ConstantCostModel
from llmsim.costmodel.profile import HardwareProfile
from llmsim.costmodel.profile_files import list_profiles, load_profile

__all__ = [
    "AnalyticCostModel",
    "BatchShape",
    "ConstantCostModel",
    "CostModel",
    "HardwareProfile",
    "ModelArch",
    "derive_kv_capacity_tokens",
    "kv_bytes_per_token_per_gpu",
    "list_models",
    "list_profiles",
    "load_model",
    "load_profile",
]
