"""`inspect --json` agrees with what llama-server itself prints when it loads each tiny model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rig.server import LlamaServer

_LINE = re.compile(r"print_info: (.+?)\s+= (.*)$")
# print_info name → inspect --json key
FIELDS = {
    "arch": "architecture",
    "n_ctx_train": "context_length",
    "n_embd": "embedding_length",
    "n_layer": "block_count",
    "n_head": "head_count",
    "n_head_kv": "head_count_kv",
    "n_embd_head_k": "key_length",
    "n_embd_head_v": "value_length",
    "n_ff": "feed_forward_length",
    "n_expert": "expert_count",
    "n_expert_used": "expert_used_count",
    "n_swa": "sliding_window",
    "n_vocab": "vocab_size",
    "n_rot": "rope_dimension_count",
    "freq_base_train": "rope_freq_base",
    "n_lora_q": "q_lora_rank",
    "n_lora_kv": "kv_lora_rank",
    "n_embd_head_k_mla": "key_length_mla",
    "n_embd_head_v_mla": "value_length_mla",
    "n_ff_exp": "expert_feed_forward_length",
    "n_expert_shared": "expert_shared_count",
    "n_layer_dense_lead": "leading_dense_block_count",
    "ssm_d_conv": "ssm_conv_kernel",
    "ssm_d_inner": "ssm_inner_size",
    "ssm_d_state": "ssm_state_size",
    "ssm_dt_rank": "ssm_time_step_rank",
}
_FTYPE_SUFFIX = {"Small": "S", "Medium": "M", "Large": "L"}


def print_info(log: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in log.splitlines():
        m = _LINE.search(line)
        if m:
            out.setdefault(m.group(1).strip(), m.group(2).strip())
    return out


def _fmt_params(n: int) -> str:  # llama.cpp's llama_model_desc formatting
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n}"


def _expected(value: Any, printed: str) -> bool:
    if value is None:
        value = 0
    if isinstance(value, float):
        return abs(float(printed) - value) < 1e-3 * max(1.0, abs(value))
    return str(value) == printed


def inspect_json(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "llamastudio", "inspect", "--json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "name", ["llama", "qwen3", "gemma3", "qwen3moe", "deepseek2", "mamba", "llama-Q4_K_M", "qwen3moe-Q4_0"]
)
def test_inspect_matches_llama_server(
    tiny_models: dict[str, Path], llama_server: Callable[..., LlamaServer], name: str
) -> None:
    srv = llama_server(tiny_models[name], "-c", "256", "-lv", "4")
    printed = print_info(srv.log())
    facts = inspect_json(tiny_models[name])

    compared = 0
    for pname, key in FIELDS.items():
        if pname not in printed:
            continue
        value = facts.get(key)
        if value is None:  # absent from the file: llama.cpp's own default applies
            value = {"n_rot": facts["key_length"], "freq_base_train": 10000.0}.get(pname, 0)
        assert _expected(value, printed[pname]), f"{pname}={printed[pname]} but inspect {key}={value!r}"
        compared += 1
    assert compared >= 12

    assert printed["model params"] == _fmt_params(facts["parameter_count"])
    size_mib = sum(facts["quant_bytes"].values()) / 1024 / 1024
    assert printed["file size"].startswith(f"{size_mib:.2f} MiB")
    ftype = printed["file type"]
    for long, short in _FTYPE_SUFFIX.items():
        ftype = ftype.replace(f" - {long}", f"_{short}")
    assert ftype == facts["file_type_name"]
    assert printed["n_vocab"] == str(facts["vocab_size"])


def test_split_model_loads_in_llama_server(
    split_model: list[Path], llama_server: Callable[..., LlamaServer]
) -> None:
    srv = llama_server(split_model[0], "-c", "256", "-lv", "4")
    facts = inspect_json(split_model[0])
    assert print_info(srv.log())["model params"] == _fmt_params(facts["parameter_count"])
    assert facts["split_count"] == 4
