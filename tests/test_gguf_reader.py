"""The header reader agrees with the gguf package's own reader on every tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from llamastudio.gguf import facts_from_model, load_model, split_names


def _reference_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = fld.contents()
        out[key] = value
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(np.float32(value))
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


@pytest.mark.parametrize(
    "name",
    [
        "llama",
        "qwen3",
        "gemma3",
        "qwen3moe",
        "deepseek2",
        "mamba",
        "llama-Q8_0",
        "llama-Q4_K_M",
        "qwen3moe-Q4_0",
    ],
)
def test_matches_gguf_reader(tiny_models: dict[str, Path], name: str) -> None:
    path = tiny_models[name]
    ours = load_model(str(path))
    ref = gguf.GGUFReader(path)

    ref_meta = _reference_metadata(ref)
    assert list(ours.metadata) == list(ref_meta)
    for key, value in ref_meta.items():
        assert _norm(ours.metadata[key]) == _norm(value), key

    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.ggml_type == theirs.tensor_type
        assert mine.n_elements == theirs.n_elements
        assert mine.n_bytes == theirs.n_bytes
        assert ours.parts[0].data_offset + mine.offset == theirs.data_offset
    assert ours.file_size == path.stat().st_size


def test_facts_of_quantized_model(tiny_models: dict[str, Path]) -> None:
    facts = facts_from_model(load_model(str(tiny_models["llama-Q4_K_M"])))
    assert facts.file_type_name == "Q4_K_M"
    assert {"Q4_K", "F32"} <= set(facts.quant_bytes)
    ref = gguf.GGUFReader(tiny_models["llama-Q4_K_M"])
    assert sum(facts.quant_bytes.values()) == sum(int(t.n_bytes) for t in ref.tensors)
    assert facts.parameter_count == sum(int(t.n_elements) for t in ref.tensors)
    assert len(facts.layer_bytes) == facts.block_count == 2
    layer0 = sum(int(t.n_bytes) for t in ref.tensors if t.name.startswith("blk.0."))
    assert facts.layer_bytes[0] == layer0
    assert facts.non_layer_bytes["token_embd"] == next(
        int(t.n_bytes) for t in ref.tensors if t.name == "token_embd.weight"
    )


def test_split_model_reads_as_one(split_model: list[Path], tiny_models: dict[str, Path]) -> None:
    assert len(split_model) == 4
    for part in split_model:  # any part names the whole set
        model = load_model(str(part))
        assert len(model.parts) == 4
    whole = load_model(str(tiny_models["qwen3"]))
    assert [t.name for t in model.tensors] == [t.name for t in whole.tensors]
    assert model.file_size == sum(p.stat().st_size for p in split_model)
    facts = facts_from_model(model)
    assert facts.split_count == 4
    assert facts.parameter_count == facts_from_model(whole).parameter_count


def test_split_names() -> None:
    assert split_names("/m/x-00002-of-00003.gguf") == [f"/m/x-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert split_names("https://h/r/x-00001-of-00002.gguf?download=1") == [
        "https://h/r/x-00001-of-00002.gguf?download=1",
        "https://h/r/x-00002-of-00002.gguf?download=1",
    ]
    assert split_names("model.gguf") == ["model.gguf"]


def test_missing_split_part_is_a_clear_error(split_model: list[Path], tmp_path: Path) -> None:
    from llamastudio.errors import NotFound

    for part in split_model[:2]:
        (tmp_path / part.name).symlink_to(part)
    with pytest.raises(NotFound, match="00003-of-00004"):
        load_model(str(tmp_path / split_model[0].name))


def test_facts_per_architecture(tiny_models: dict[str, Path]) -> None:
    f = {
        name: facts_from_model(load_model(str(tiny_models[name])))
        for name in ("gemma3", "deepseek2", "mamba", "qwen3moe")
    }
    assert f["gemma3"].sliding_window == 128
    assert f["deepseek2"].kv_lora_rank == 32
    assert f["deepseek2"].key_length_mla == 48 and f["deepseek2"].value_length_mla == 32
    assert f["mamba"].ssm_state_size == 16 and f["mamba"].ssm_inner_size == 128
    assert f["qwen3moe"].expert_count == 4 and f["qwen3moe"].expert_used_count == 2
    js = f["qwen3moe"].to_json()
    for key in (
        "architecture",
        "block_count",
        "context_length",
        "embedding_length",
        "feed_forward_length",
        "head_count",
        "head_count_kv",
        "key_length",
        "value_length",
        "expert_count",
        "expert_used_count",
        "sliding_window",
        "vocab_size",
        "parameter_count",
        "file_size",
        "tensor_count",
        "file_type",
        "quant_bytes",
        "layer_bytes",
    ):
        assert key in js, key
    assert js["expert_feed_forward_length"] == 64
    assert js["general"]["license"] == "mit"
