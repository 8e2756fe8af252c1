"""`--model` accepts a Hugging Face config.json: dense, GQA and MoE configs load, price, and bad
or unpriceable ones fail with the field and the file named (llmsim.costmodel.hf_config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmsim.cli import main
from llmsim.costmodel import load_model
from llmsim.errors import LlmsimError

CONFIGS = Path(__file__).resolve().parent / "data" / "hf_configs"


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b"])
def test_a_config_json_gives_the_same_architecture_as_the_catalog_entry(name):
    from_config, catalog = load_model(str(CONFIGS / name / "config.json")), load_model(name)
    assert from_config.name == name and from_config.hf_id == catalog.hf_id
    skip = {"name", "hf_id"}
    assert from_config.model_dump(exclude=skip) == catalog.model_dump(exclude=skip)


def test_qwen3_moe_reads_num_experts_moe_intermediate_size_and_explicit_head_dim():
    model = load_model(str(CONFIGS / "qwen3-30b-a3b"))  # a folder holding config.json works too
    assert (model.num_local_experts, model.num_experts_per_tok, model.intermediate_size) == (128, 8, 768)
    assert model.head_dim == 128 != model.hidden_size // model.num_attention_heads
    assert model.sliding_window is None  # use_sliding_window: false
    # The model card: 30.5B parameters in total, 3.3B activated (embedding included).
    assert model.num_params == pytest.approx(30.5e9, rel=0.005)
    assert model.num_active_params_per_token + model.num_embedding_params == pytest.approx(3.3e9, rel=0.02)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "mixtral-8x7b", "qwen3-30b-a3b"])
def test_step_time_prices_a_config_json(name, capsys):
    path = str(CONFIGS / name / "config.json")
    assert main(["step-time", "--model", path, "--hardware", "h100-80g-sxm", "--tp", "2", "--decode", "16", "--context", "512", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == name and out["step_ms"] > 0 and out["breakdown_ms"]["communication"] > 0


def test_moe_prices_only_the_experts_hit():
    """Qwen3-30B-A3B reads ~3B parameters per token, Llama-3.1-8B ~8B: a batch-1 decode is faster."""
    from llmsim.costmodel import BatchShape, load_profile
    from llmsim.costmodel.tables import cost_model_for

    profile = load_profile("h100-80g-sxm")
    shape = BatchShape(decode_seqs=1, decode_context_sum_tokens=512, decode_context_max_tokens=512)
    moe = cost_model_for(load_model(str(CONFIGS / "qwen3-30b-a3b")), profile).step_time_s(shape)
    dense = cost_model_for(load_model(str(CONFIGS / "llama-3.1-8b")), profile).step_time_s(shape)
    assert moe < dense


def _write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _llama() -> dict:
    return json.loads((CONFIGS / "llama-3.1-8b" / "config.json").read_text())


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.pop("num_hidden_layers"), ["missing key 'num_hidden_layers'"]),
    (lambda d: d.update(hidden_size="wide"), ["'hidden_size'", "valid integer"]),
    (lambda d: d.update(num_key_value_heads=5), ["multiple of num_key_value_heads"]),
    (lambda d: d.update(torch_dtype="float8_e4m3fn"), ["'torch_dtype'"]),
    (lambda d: d.update(num_local_experts=8), ["num_experts_per_tok"]),
    (lambda d: d.update(kv_lora_rank=512), ["kv_lora_rank=512", "multi-head latent attention"]),
])
def test_bad_fields_are_named_with_the_file(tmp_path, edit, words):
    data = _llama()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(LlmsimError) as info:
        load_model(str(path))
    assert str(path) in str(info.value)
    for w in words:
        assert w in str(info.value)


def test_shared_experts_are_refused_not_dropped():
    with pytest.raises(LlmsimError, match="shared_expert_intermediate_size=20480 asks for shared experts"):
        load_model(str(CONFIGS / "qwen2-57b-a14b" / "config.json"))


def test_invalid_json_and_missing_file_name_the_file(tmp_path, capsys):
    path = _write(tmp_path, '{"hidden_size": 4096,\n  "vocab_size": }')
    with pytest.raises(LlmsimError, match=r"not valid JSON: .* line 2"):
        load_model(str(path))
    assert main(["step-time", "--model", str(tmp_path / "nope.json"), "--hardware", "h100-80g-sxm", "--prefill", "8"]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
