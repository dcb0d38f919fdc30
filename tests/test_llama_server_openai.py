"""The rig's real llama-server answers the real `openai` SDK on a tiny model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.rig.server import LlamaServer


@pytest.mark.parametrize("name", ["qwen3", "llama-Q4_K_M"])
def test_chat_completion(
    tiny_models: dict[str, Path], llama_server: Callable[..., LlamaServer], name: str
) -> None:
    srv = llama_server(tiny_models[name], "-c", "512")
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused")
    resp = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0
    )
    assert resp.choices[0].finish_reason in ("length", "stop")
    assert isinstance(resp.choices[0].message.content, str)
    assert resp.usage is not None and 1 <= resp.usage.completion_tokens <= 8
    assert resp.usage.prompt_tokens > 3


def test_streaming_chat(tiny_models: dict[str, Path], llama_server: Callable[..., LlamaServer]) -> None:
    srv = llama_server(tiny_models["gemma3"], "-c", "512")
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Count"}], max_tokens=6, stream=True
    )
    chunks = [c for c in stream if c.choices and c.choices[0].delta.content]
    assert 1 <= len(chunks) <= 6
