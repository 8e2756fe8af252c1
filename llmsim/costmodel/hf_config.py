"""Model architectures from a Hugging Face `config.json`, as `--model` and `model:` accept them.

`model_from_hf_config(path)` reads the file (or `config.json` in a folder) and builds a
`ModelArch` (catalog.py) from the fields llmsim prices: `num_hidden_layers`, `hidden_size`,
`intermediate_size`, `num_attention_heads`, `num_key_value_heads` (default: no GQA), `head_dim`
(default hidden / heads), `vocab_size`, `tie_word_embeddings`, `max_position_embeddings`,
`torch_dtype` (or `dtype`; default bfloat16, what engines serve these checkpoints in), `rope_theta`,
`rms_norm_eps`, `sliding_window` (kept only when in use), `attention_bias`. Multimodal configs
whose language model sits under `text_config` are read from there.

Mixture of experts: experts from `num_local_experts` (Mixtral), `num_experts` (Qwen2/3-MoE) or
`n_routed_experts` (DeepSeek), top-k from `num_experts_per_tok`, each expert's width from
`moe_intermediate_size` when given (else `intermediate_size`). What llmsim's cost models cannot
price is refused with the field that asks for it, never dropped: shared experts
(`shared_expert_intermediate_size`, `n_shared_experts`), dense layers among MoE ones
(`first_k_dense_replace`, `mlp_only_layers`, `decoder_sparse_step` other than 1) and multi-head
latent attention (`kv_lora_rank`). The MLP is priced as gated (gate, up, down), as in Llama.
Sizes are element counts as in the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from llmsim.costmodel._yamlio import format_validation_error
from llmsim.costmodel.catalog import ModelArch
from llmsim.errors import LlmsimError, read_text

_WHAT = "Hugging Face config"
_REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", "max_position_embeddings")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
_QKV_BIAS_TYPES = ("qwen2", "qwen2_moe")  # Qwen2's q/k/v projections always carry a bias (modeling code)


def _read(path: Path) -> dict:
    if path.is_dir():
        path = path / "config.json"
    text = read_text(path, _WHAT)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmsimError(f"{_WHAT} file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise LlmsimError(f"{_WHAT} file {path} must hold a JSON object, got {type(data).__name__}")
    if "hidden_size" not in data and isinstance(data.get("text_config"), dict):
        data = {**data["text_config"], "_name_or_path": data.get("_name_or_path")}
    return data


def _refuse_unpriced(data: dict, path: Path) -> None:
    """Raise for architecture features the cost models do not price (named by their field)."""
    checks = [
        ("shared_expert_intermediate_size", lambda v: bool(v), "shared experts"),
        ("n_shared_experts", lambda v: bool(v), "shared experts"),
        ("first_k_dense_replace", lambda v: bool(v), "dense layers before the MoE layers"),
        ("mlp_only_layers", lambda v: bool(v), "dense layers among the MoE layers"),
        ("decoder_sparse_step", lambda v: v not in (None, 1), "MoE on every n-th layer only"),
        ("kv_lora_rank", lambda v: v is not None, "multi-head latent attention (MLA)"),
    ]
    for key, asks, feature in checks:
        if key in data and asks(data[key]):
            raise LlmsimError(f"{_WHAT} file {path}: {key}={data[key]!r} asks for {feature}, which llmsim's cost models "
                              "do not price yet")


def _moe_fields(data: dict, path: Path) -> dict:
    experts_key = next((k for k in _EXPERT_KEYS if data.get(k)), None)
    if experts_key is None:
        return {}
    if "num_experts_per_tok" not in data:
        raise LlmsimError(f"missing key 'num_experts_per_tok' in {_WHAT} file {path} (it has {experts_key}={data[experts_key]!r})")
    fields = {"num_local_experts": data[experts_key], "num_experts_per_tok": data["num_experts_per_tok"]}
    if data.get("moe_intermediate_size"):
        fields["intermediate_size"] = data["moe_intermediate_size"]
    return fields


def model_from_hf_config(path: Path | str) -> ModelArch:
    """A ModelArch from a Hugging Face config.json (a file, or a folder holding config.json)."""
    path = Path(path)
    data = _read(path)
    file = path / "config.json" if path.is_dir() else path
    missing = [k for k in _REQUIRED if k not in data]
    if "intermediate_size" not in data and "moe_intermediate_size" not in data:
        missing.append("intermediate_size")
    if missing:
        raise LlmsimError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)} in {_WHAT} file {file}")
    _refuse_unpriced(data, file)
    name = (file.parent.name if file.name == "config.json" else file.stem) or "model"
    fields = {
        "name": name,
        "hf_id": str(data.get("_name_or_path") or file),
        **{k: data[k] for k in _REQUIRED},
        "intermediate_size": data.get("intermediate_size"),
        "num_key_value_heads": data.get("num_key_value_heads") or data["num_attention_heads"],
        "head_dim": data.get("head_dim") or 0,  # 0: ModelArch fills hidden / heads
        "tie_word_embeddings": bool(data.get("tie_word_embeddings", False)),
        "torch_dtype": data.get("torch_dtype") or data.get("dtype") or "bfloat16",
        "rope_theta": data.get("rope_theta"),
        "rms_norm_eps": data.get("rms_norm_eps"),
        "sliding_window": data.get("sliding_window") if data.get("use_sliding_window", True) else None,
        "attention_bias": bool(data.get("attention_bias", False)),
        "qkv_bias": data.get("model_type") in _QKV_BIAS_TYPES,
        **_moe_fields(data, file),
    }
    try:
        return ModelArch.model_validate(fields)
    except ValidationError as exc:
        raise LlmsimError(format_validation_error(exc, file, _WHAT)) from None
