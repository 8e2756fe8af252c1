"""Model architectures: the fields of a Hugging Face `config.json`, and sizes derived from them.

A `ModelArch` is loaded from a YAML file in `llmsim/costmodel/models/` (by catalog name), from
any YAML path, or from a Hugging Face `config.json` itself (llmsim.costmodel.hf_config). Field names follow Hugging Face so a config can be copied over. Derived sizes are in
parameters (counts) and bytes; per-GPU sizes take the tensor-parallel degree `tp`, sharding the
way vLLM does (heads, intermediate and vocabulary split across GPUs; norms and, when tp exceeds
the KV head count, KV heads replicated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmsim.costmodel._yamlio import load_yaml_model, looks_like_path
from llmsim.errors import LlmsimError, unknown_name

MODELS_DIR = Path(__file__).resolve().parent / "models"

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


class ModelArch(BaseModel):
    """A transformer decoder (Llama family, optionally Mixtral-style MoE) as in `config.json`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # catalog name, e.g. llama-2-7b
    hf_id: str  # Hugging Face repository the values come from
    num_hidden_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)  # per expert for MoE
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(default=0, ge=0)  # 0 or absent: hidden_size // num_attention_heads
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(gt=0)
    torch_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    num_local_experts: int | None = Field(default=None, gt=0)  # MoE: experts per layer
    num_experts_per_tok: int | None = Field(default=None, gt=0)  # MoE: top-k
    # Optional fields that do not change the cost but are kept so a config round-trips.
    rope_theta: float | None = None
    rms_norm_eps: float | None = None
    sliding_window: int | None = None  # recorded only: the analytic model attends the full context
    attention_bias: bool = False  # Llama's flag: q, k, v and o projections carry a bias
    qkv_bias: bool = False  # llmsim's name for Qwen2's hard-coded q/k/v bias (no config key)

    @model_validator(mode="before")
    @classmethod
    def _default_head_dim(cls, data: object) -> object:
        # HF configs omit head_dim when it is hidden / heads; fill it so it is always an int.
        if isinstance(data, dict) and not data.get("head_dim"):
            hidden, heads = data.get("hidden_size"), data.get("num_attention_heads")
            if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
                data = {**data, "head_dim": hidden // heads}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelArch:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if (self.num_local_experts is None) != (self.num_experts_per_tok is None):
            raise ValueError("set both num_local_experts and num_experts_per_tok, or neither")
        if self.is_moe and self.num_experts_per_tok > self.num_local_experts:  # type: ignore[operator]
            raise ValueError("num_experts_per_tok exceeds num_local_experts")
        return self

    # ----- basic derived quantities -----

    @property
    def dtype_bytes(self) -> int:
        """Bytes per weight / activation / KV element."""
        return _DTYPE_BYTES[self.torch_dtype]

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts is not None

    @property
    def num_experts(self) -> int:
        """Experts per layer (1 for a dense MLP)."""
        return self.num_local_experts or 1

    @property
    def experts_per_token(self) -> int:
        """Experts each token is routed to (1 for a dense MLP)."""
        return self.num_experts_per_tok or 1

    def check_tensor_parallel(self, tp: int) -> None:
        """Raise LlmsimError if the heads cannot be sharded over `tp` GPUs (vLLM's rules)."""
        if not self._tp_divides_heads(tp):
            valid = [t for t in range(1, 17) if self._tp_divides_heads(t)]
            raise LlmsimError(
                f"cluster.tensor_parallel={tp} does not divide the {self.num_attention_heads} "
                f"attention heads / {self.num_key_value_heads} KV heads of {self.name}; "
                f"valid values up to 16: {', '.join(map(str, valid))}"
            )

    def _tp_divides_heads(self, tp: int) -> bool:
        kv = self.num_key_value_heads
        return tp >= 1 and self.num_attention_heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)

    def q_heads_per_gpu(self, tp: int) -> int:
        return self.num_attention_heads // tp

    def kv_heads_per_gpu(self, tp: int) -> int:
        """KV heads held by each GPU; replicated (at least 1) when tp exceeds the KV head count."""
        return max(1, self.num_key_value_heads // tp)

    # ----- parameter counts -----

    def _attention_params(self, q_heads: int, kv_heads: int) -> int:
        q_dim, kv_dim = q_heads * self.head_dim, kv_heads * self.head_dim
        weights = self.hidden_size * (q_dim + 2 * kv_dim) + q_dim * self.hidden_size
        if self.attention_bias:
            biases = q_dim + 2 * kv_dim + self.hidden_size
        elif self.qkv_bias:
            biases = q_dim + 2 * kv_dim
        else:
            biases = 0
        return weights + biases

    def _expert_params(self, intermediate: int) -> int:
        return 3 * self.hidden_size * intermediate  # gate, up, down

    def _router_params(self) -> int:
        return self.hidden_size * self.num_local_experts if self.is_moe else 0  # type: ignore[operator]

    @property
    def num_layer_params(self) -> int:
        """Parameters in all decoder layers (attention, MLP/experts, router, two norms each)."""
        per_layer = (
            self._attention_params(self.num_attention_heads, self.num_key_value_heads)
            + self.num_experts * self._expert_params(self.intermediate_size)
            + self._router_params()
            + 2 * self.hidden_size
        )
        return self.num_hidden_layers * per_layer

    @property
    def num_embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_lm_head_params(self) -> int:
        """LM-head parameters counted separately (0 when tied to the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """Total parameters, as Hugging Face counts them (each tied matrix once)."""
        return self.num_layer_params + self.num_embedding_params + self.num_lm_head_params + self.hidden_size

    @property
    def num_active_params_per_token(self) -> int:
        """Matmul parameters one token passes through: layers with top-k experts, plus LM head.

        2 x this x tokens is the model FLOPs of a forward pass (embedding lookup excluded).
        """
        per_layer = (
            self._attention_params(self.num_attention_heads, self.num_key_value_heads)
            + self.experts_per_token * self._expert_params(self.intermediate_size)
            + self._router_params()
        )
        return self.num_hidden_layers * per_layer + self.vocab_size * self.hidden_size

    # ----- bytes -----

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    def layer_weight_bytes_per_gpu(self, tp: int) -> int:
        """One decoder layer's weights on one GPU at tensor parallel `tp`."""
        attn = self._attention_params(self.q_heads_per_gpu(tp), self.kv_heads_per_gpu(tp))
        experts = self.num_experts * self._expert_params(-(-self.intermediate_size // tp))
        params = attn + experts + self._router_params() + 2 * self.hidden_size
        return params * self.dtype_bytes

    def weight_bytes_per_gpu(self, tp: int = 1) -> int:
        """All weights on one GPU: sharded layers, vocab-parallel embedding and LM head."""
        vocab_shard = -(-self.vocab_size // tp)
        matrices = 1 if self.tie_word_embeddings else 2
        embed_bytes = matrices * vocab_shard * self.hidden_size * self.dtype_bytes
        final_norm_bytes = self.hidden_size * self.dtype_bytes
        return self.num_hidden_layers * self.layer_weight_bytes_per_gpu(tp) + embed_bytes + final_norm_bytes

    def kv_bytes_per_token_per_layer_per_gpu(self, tp: int = 1) -> int:
        """K and V of one token in one layer on one GPU."""
        return 2 * self.kv_heads_per_gpu(tp) * self.head_dim * self.dtype_bytes

    def kv_bytes_per_token_per_gpu(self, tp: int = 1) -> int:
        """2 (K, V) x layers x KV heads per GPU x head_dim x dtype bytes."""
        return self.num_hidden_layers * self.kv_bytes_per_token_per_layer_per_gpu(tp)


def list_models() -> list[str]:
    """Catalog names, sorted (the YAML file stems in llmsim/costmodel/models/)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def load_model(name_or_path: str | Path) -> ModelArch:
    """A catalog model by name (e.g. 'llama-2-7b'), a ModelArch YAML file by path, or a Hugging
    Face config.json (a `.json` path, or a folder holding config.json; llmsim.costmodel.hf_config)."""
    text = str(name_or_path)
    if text.endswith(".json") or (looks_like_path(name_or_path) and (Path(text) / "config.json").is_file()):
        # Imported here: hf_config imports this module.
        from llmsim.costmodel.hf_config import model_from_hf_config

        return model_from_hf_config(Path(text))
    if looks_like_path(name_or_path):
        return load_yaml_model(ModelArch, Path(name_or_path), "model")
    name = str(name_or_path)
    path = MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise unknown_name("model", name, list_models(), "a path to a YAML file or a Hugging Face config.json")
    return load_yaml_model(ModelArch, path, "model")
