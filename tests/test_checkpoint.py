"""Transformers checkpoints (config.json + safetensors shards): exact bytes, parameters and dtypes
from the headers, locally and over HTTP range requests (≤ 2 requests, ≤ 1 MiB per shard), and a
clear error — naming the file — for every corrupt header."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from llamastudio.checkpoint import (
    arch_facts,
    choose_shards,
    read_checkpoint,
    read_local,
    read_remote,
    remote_checkpoint,
)
from llamastudio.checkpoint.config import checkpoint_label, quant_label
from llamastudio.checkpoint.remote import FIRST_RANGE, MAX_REMOTE_HEADER, fetch_header
from llamastudio.errors import AuthRequired, InvalidInput, NotFound, RangeNotSupported
from tests.rig import checkpoints as rig
from tests.rig.http import serve_files


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, rig.Expected]:
    return tmp_path / "ck", rig.write_checkpoint(tmp_path / "ck")


def test_bytes_params_and_dtypes_are_exact(checkpoint: tuple[Path, rig.Expected]) -> None:
    directory, want = checkpoint
    ck = read_checkpoint(directory)
    assert ck.weight_bytes == want.weight_bytes == 173_376
    assert ck.params == want.params and ck.tensors == want.tensors
    assert ck.bytes_by_dtype == want.bytes_by_dtype
    assert set(ck.bytes_by_dtype) == {"F16", "F32", "BF16", "I32", "F8_E4M3"}
    assert ck.dtype == "F16"  # the dtype holding most bytes (config says bfloat16: the headers win)
    assert [Path(s).name for s in ck.shards] == [p.name for p in want.shards]
    # the data after each header is exactly the tensors' bytes
    for path, header in zip(want.shards, (read_local(p) for p in want.shards), strict=True):
        assert path.stat().st_size == 8 + header.header_len + header.data_bytes
    # K and V × 2 layers × 2 KV heads × head_dim 64/4 × 2 bytes
    assert ck.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2 and ck.kv_bytes_per_token(1) == 128
    facts = ck.facts()
    assert facts["architecture"] == "LlamaForCausalLM" and facts["ctx_train"] == 2048
    assert (facts["layers"], facts["kv_heads"], facts["head_dim"]) == (2, 2, 16)


def test_shards_written_by_the_safetensors_package_read_the_same(
    checkpoint: tuple[Path, rig.Expected],
) -> None:
    """The numpy-written shard, cross-checked against the safetensors package's own reader."""
    shard = checkpoint[1].shards[0]
    header = read_local(shard)
    with safe_open(str(shard), "np") as f:
        theirs = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        assert {t.name: list(t.shape) for t in header.tensors} == {
            k: s.get_shape() for k, s in theirs.items()
        }
        assert {t.name: t.dtype for t in header.tensors} == {k: s.get_dtype() for k, s in theirs.items()}
        assert header.metadata == f.metadata() == {"format": "pt"}


def test_the_index_is_respected(tmp_path: Path, checkpoint: tuple[Path, rig.Expected]) -> None:
    directory, want = checkpoint
    # weights in another format beside the index's shards are not counted
    rig.write_raw(directory / "consolidated.safetensors", [("x", "BF16", (1024,))])
    assert read_checkpoint(directory).weight_bytes == want.weight_bytes
    # an index naming a missing shard is refused
    want.shards[1].rename(tmp_path / "away.safetensors")
    with pytest.raises(InvalidInput, match=re.escape("missing: model-00002-of-00003.safetensors")):
        read_checkpoint(directory)
    (tmp_path / "away.safetensors").rename(want.shards[1])
    # an index putting a tensor in a shard that lacks it is refused
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00003.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput, match=re.escape("lm_head.weight")):
        read_checkpoint(directory)
    # and an index pointing outside the directory never opens anything
    index["weight_map"]["lm_head.weight"] = "../away.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidInput, match="not a shard file beside it"):
        read_checkpoint(directory)


def test_without_an_index(tmp_path: Path) -> None:
    want = rig.write_checkpoint(tmp_path / "ck", index=False)
    assert not (tmp_path / "ck" / "model.safetensors.index.json").exists()
    ck = read_checkpoint(tmp_path / "ck")
    assert (ck.weight_bytes, ck.params, len(ck.shards)) == (want.weight_bytes, want.params, 3)
    # transformers' numbered shards are the checkpoint: Mistral's layout beside them is not counted
    rig.write_raw(tmp_path / "ck" / "consolidated.safetensors", [("x", "BF16", (1024,))])
    assert read_checkpoint(tmp_path / "ck").weight_bytes == want.weight_bytes
    want.shards[2].unlink()  # an incomplete set is no checkpoint
    with pytest.raises(InvalidInput, match="incomplete set of model-i-of-n shards"):
        read_checkpoint(tmp_path / "ck")
    # other names: every shard counts, and a tensor in two of them is refused, not counted twice
    other = rig.write_checkpoint(
        tmp_path / "other", [[("a", "F16", (4,))], [("b", "F32", (2,))]], index=False
    )
    for i, shard in enumerate(other.shards):
        shard.rename(shard.with_name(f"part-{i}.safetensors"))
    assert read_checkpoint(tmp_path / "other").weight_bytes == 4 * 2 + 2 * 4
    shutil.copy(tmp_path / "other" / "part-0.safetensors", tmp_path / "other" / "part-2.safetensors")
    with pytest.raises(InvalidInput, match="is in both"):
        read_checkpoint(tmp_path / "other")


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors", "consolidated.safetensors"],
         ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
        (["model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"], []),
        (["model.safetensors", "consolidated.safetensors"], ["model.safetensors"]),
        (["b.safetensors", "a.safetensors", "README.md"], ["a.safetensors", "b.safetensors"]),
    ],
)  # fmt: skip
def test_which_files_are_the_shards(names: list[str], chosen: list[str]) -> None:
    assert choose_shards(names) == chosen


def _header(header: dict[str, Any], data: bytes = b"") -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(rig.header_bytes(header) + data)
        return path

    return write


CORRUPT: list[tuple[str, Callable[[Path], Path], str]] = [
    ("bad-length", rig.write_bad_length, "over the 104,857,600 byte limit"),
    ("length-past-eof", lambda p: (p.write_bytes(b"\x00\x01\x00\x00\x00\x00\x00\x00{}"), p)[1],
     "runs past the end of the file"),
    ("too-short", lambda p: (p.write_bytes(b"\x02\x00"), p)[1], "too short for a safetensors file"),
    ("not-json", rig.write_not_json, "not valid JSON"),
    ("not-an-object", _header([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
    ("past-eof", rig.write_past_eof, "runs past the end of the file"),
    ("unknown-dtype", rig.write_unknown_dtype, "unknown dtype 'Q4_K'"),
    ("end-before-begin", _header({"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, bytes(4)),
     "end 0 is before begin 4"),
    ("size-mismatch", _header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
     "span 4 bytes but shape [2] of F32 needs 8"),
    ("gap", _header({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                     "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}}, bytes(6)), "a gap"),
    ("overlap", _header({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                         "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)),
     "an overlap"),
    ("trailing-bytes", _header({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, bytes(9)),
     "7 bytes after the last tensor"),
    ("float-offsets", _header({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2.0]}}, bytes(2)),
     "data_offsets must be"),
    ("bad-shape", _header({"a": {"dtype": "U8", "shape": [-2], "data_offsets": [0, 2]}}, bytes(2)),
     "shape must be"),
    ("bad-metadata", _header({"__metadata__": {"n": 1}}), "__metadata__ must be an object of strings"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "write", "message"), CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_headers_are_clear_errors(
    tmp_path: Path, what: str, write: Callable[[Path], Path], message: str
) -> None:
    path = write(tmp_path / f"{what}.safetensors")
    with pytest.raises(InvalidInput) as err:
        read_local(path)
    assert message in err.value.message and str(path) in err.value.message
    # the same file in a checkpoint directory: the checkpoint is refused with the shard's reason
    rig.write_checkpoint(tmp_path / "ck", [[("w", "F16", (4,))]])
    shutil.copy(path, tmp_path / "ck" / "model.safetensors")
    with pytest.raises(InvalidInput, match=re.escape("model.safetensors")):
        read_checkpoint(tmp_path / "ck")


def test_duplicate_tensor_names_in_one_header(tmp_path: Path) -> None:
    entry = b'{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}'
    raw = b'{"a":' + entry % (0, 1) + b',"a":' + entry % (1, 2) + b"}"
    path = tmp_path / "dup.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(2))
    with pytest.raises(InvalidInput, match="duplicate key 'a'"):
        read_local(path)


def test_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    bare = tmp_path / "weights"
    bare.mkdir()
    rig.write_raw(bare / "model.safetensors", [("w", "F16", (4,))])
    with pytest.raises(InvalidInput) as err:
        read_checkpoint(bare)
    assert err.value.message == f"{bare}: no config.json — not a transformers checkpoint"
    (bare / "model.safetensors").unlink()
    (bare / "config.json").write_text(json.dumps(rig.CONFIG))
    with pytest.raises(InvalidInput, match=re.escape("config.json but no *.safetensors weights")):
        read_checkpoint(bare)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(InvalidInput, match="is a GGUF file"):
        read_checkpoint(gguf)
    with pytest.raises(NotFound):
        read_checkpoint(tmp_path / "nope")
    (bare / "config.json").write_text("[1]")
    rig.write_raw(bare / "model.safetensors", [("w", "F16", (4,))])
    with pytest.raises(InvalidInput, match=re.escape("config.json: expected a JSON object")):
        read_checkpoint(bare)
    (bare / "config.json").write_text(
        json.dumps({k: v for k, v in rig.CONFIG.items() if k != "num_hidden_layers"})
    )
    with pytest.raises(InvalidInput, match="no num_hidden_layers"):
        read_checkpoint(bare)


# -- config.json ------------------------------------------------------------------------------
def test_config_facts_and_defaults() -> None:
    a = arch_facts({"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 512})
    assert (a.kv_heads, a.head_dim, a.ctx_train, a.quant, a.tie_word_embeddings) == (8, 64, None, None, True)
    assert a.architecture == "unknown"
    gpt2 = arch_facts({"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024})
    assert (gpt2.layers, gpt2.head_dim, gpt2.ctx_train, gpt2.architecture) == (12, 64, 1024, "gpt2")
    explicit = arch_facts(rig.CONFIG | {"head_dim": 128, "dtype": "float16", "torch_dtype": None})
    assert explicit.head_dim == 128 and explicit.torch_dtype == "F16"
    with pytest.raises(InvalidInput, match="num_attention_heads must be a positive integer, got '8'"):
        arch_facts(rig.CONFIG | {"num_attention_heads": "8"})


def test_multimodal_configs_read_the_language_model() -> None:
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "torch_dtype": "bfloat16",
        "text_config": {"num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                        "head_dim": 256, "hidden_size": 2560, "max_position_embeddings": 131072},
        "vision_config": {"num_hidden_layers": 27, "num_attention_heads": 16, "hidden_size": 1152},
    }  # fmt: skip
    a = arch_facts(config)
    assert (a.layers, a.kv_heads, a.head_dim, a.ctx_train) == (34, 4, 256, 131072)
    assert a.architecture == "Gemma3ForConditionalGeneration" and a.torch_dtype == "BF16"


@pytest.mark.parametrize(
    ("qc", "label"),
    [
        ({"quant_method": "awq", "bits": 4}, "AWQ"),
        ({"quant_method": "gptq", "bits": 4}, "GPTQ"),
        ({"quant_method": "fp8", "fmt": "e4m3"}, "FP8"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "BNB-NF4"),
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "BNB-8bit"),
        ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"num_bits": 4, "type": "int"}, "input_activations": None}}}, "W4A16"),
        ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"num_bits": 8, "type": "float"}, "input_activations": {"num_bits": 8}}}}, "FP8"),
        ({"quant_method": "mxfp4"}, "MXFP4"),
        ({}, None),
    ],
)  # fmt: skip
def test_quantization_labels(qc: dict[str, Any], label: str | None) -> None:
    assert quant_label(qc) == label


def test_checkpoint_labels() -> None:
    assert checkpoint_label(rig.CONFIG, "org/Llama") == "BF16"
    assert checkpoint_label(rig.CONFIG | {"quantization_config": {"quant_method": "awq"}}, "x") == "AWQ"
    assert checkpoint_label({}, "Qwen/Qwen3-8B-FP8") == "FP8"
    assert checkpoint_label({"torch_dtype": "auto"}, "org/plain") == "safetensors"


def test_mla_kv_cache_is_the_compressed_latent(checkpoint: tuple[Path, rig.Expected]) -> None:
    directory, _ = checkpoint
    (directory / "config.json").write_text(
        json.dumps(rig.CONFIG | {"kv_lora_rank": 32, "qk_rope_head_dim": 8})
    )
    assert read_checkpoint(directory).kv_bytes_per_token() == 2 * (32 + 8) * 2


# -- over HTTP ------------------------------------------------------------------------------------
def test_remote_headers_cost_at_most_2_requests_and_1_mib(tmp_path: Path) -> None:
    small = rig.write_checkpoint(tmp_path / "small")
    medium = rig.write_checkpoint(tmp_path / "medium", metadata={"pad": "x" * 300_000})
    with serve_files(tmp_path) as srv:
        for shard in small.shards:  # a header under 64 KiB: one request
            srv.reset()
            fetched = fetch_header(f"{srv.url}/small/{shard.name}")
            assert (fetched.requests, srv.requests) == (1, 1) and srv.bytes_sent <= FIRST_RANGE
            assert fetched.bytes_fetched == srv.bytes_sent and fetched.size == shard.stat().st_size
        for shard in medium.shards:  # a 300 KB header: the rest in exactly one more request
            srv.reset()
            header = read_remote(f"{srv.url}/medium/{shard.name}")
            assert srv.requests == 2 and 300_000 < srv.bytes_sent <= MAX_REMOTE_HEADER
            assert srv.bytes_sent < shard.stat().st_size  # never the tensor data
            assert header.tensors == read_local(shard).tensors
        srv.reset()
        config = json.loads((tmp_path / "medium" / "config.json").read_text())
        remote = remote_checkpoint(config, [f"{srv.url}/medium/{s.name}" for s in medium.shards], name="m")
        assert srv.requests <= 2 * len(medium.shards)
    local = read_checkpoint(tmp_path / "medium")
    assert (remote.weight_bytes, remote.params, remote.bytes_by_dtype, remote.dtype) == (
        local.weight_bytes,
        local.params,
        local.bytes_by_dtype,
        local.dtype,
    )


def test_a_header_over_1_mib_is_refused_after_one_request(tmp_path: Path) -> None:
    path = rig.write_big_header(tmp_path / "big.safetensors", 2 << 20)
    assert read_local(path).header_len > MAX_REMOTE_HEADER  # valid, just too big to read remotely
    with serve_files(tmp_path) as srv:
        with pytest.raises(
            InvalidInput, match="reading more than 1,048,576 bytes of a remote shard is refused"
        ):
            read_remote(f"{srv.url}/big.safetensors")
        assert srv.requests == 1 and srv.bytes_sent <= FIRST_RANGE


def test_remote_errors(tmp_path: Path) -> None:
    want = rig.write_checkpoint(tmp_path, [[("w", "F16", (4,))]])
    name = want.shards[0].name
    with serve_files(tmp_path, ranges=False) as srv:
        with pytest.raises(RangeNotSupported, match="range requests"):
            read_remote(f"{srv.url}/{name}")
        assert srv.requests == 1
    with serve_files(tmp_path, token="hf_secret") as srv:
        with pytest.raises(AuthRequired, match="HF_TOKEN"):
            read_remote(f"{srv.url}/{name}")
        assert read_remote(f"{srv.url}/{name}", token="hf_secret").params == 4
        with pytest.raises(NotFound):
            read_remote(f"{srv.url}/nope.safetensors", token="hf_secret")
    rig.write_not_json(tmp_path / "bad.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with serve_files(tmp_path) as srv:
        with pytest.raises(
            InvalidInput, match=re.escape("bad.safetensors: the safetensors header is not valid JSON")
        ):
            read_remote(f"{srv.url}/bad.safetensors")
        with pytest.raises(InvalidInput, match="too short"):
            read_remote(f"{srv.url}/empty.safetensors")
