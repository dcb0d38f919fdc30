"""Session fixtures: the rig's binaries, tiny real models (all architectures, some quantized)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.rig import binaries
from tests.rig.factory import ARCHS, BUILDERS, Vocab
from tests.rig.server import LlamaServer
from tests.rig.web import browser, hub, page, studio  # noqa: F401  (browser-test fixtures, module-scoped)

# (name, source arch, llama-quantize type)
QUANTIZED = [
    ("llama-Q8_0", "llama", "Q8_0"),
    ("llama-Q4_K_M", "llama", "Q4_K_M"),
    ("qwen3moe-Q4_0", "qwen3moe", "Q4_0"),
]


@pytest.fixture(scope="session")
def rig_bin() -> Callable[[str], Path]:
    return binaries.binary


@pytest.fixture(scope="session")
def vocab() -> Vocab:
    return Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, vocab: Vocab) -> Path:
    root = tmp_path_factory.mktemp("models")
    for arch in ARCHS:
        BUILDERS[arch](root / f"{arch}.gguf", vocab)
    quantize = binaries.binary("llama-quantize")
    for name, arch, qtype in QUANTIZED:
        subprocess.run(
            [str(quantize), str(root / f"{arch}.gguf"), str(root / f"{name}.gguf"), qtype],
            check=True,
            capture_output=True,
        )
    split_dir = root / "split"
    split_dir.mkdir()
    BUILDERS["qwen3"](split_dir / "qwen3.gguf", vocab, split=8)
    return root


@pytest.fixture(scope="session")
def tiny_models(models_dir: Path) -> dict[str, Path]:
    """Every tiny model by name: the six architectures plus quantized variants."""
    names = [*ARCHS, *(q[0] for q in QUANTIZED)]
    return {name: models_dir / f"{name}.gguf" for name in names}


@pytest.fixture(scope="session")
def split_model(models_dir: Path) -> list[Path]:
    return sorted((models_dir / "split").glob("qwen3-*-of-*.gguf"))


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[Callable[..., LlamaServer]]:
    """Factory: ``llama_server(model, *args)`` → a started server, stopped after the test."""
    started: list[LlamaServer] = []

    def start(model: Path, *args: str) -> LlamaServer:
        srv = LlamaServer(
            binaries.binary("llama-server"), model, tmp_path / f"server-{len(started)}.log", *args
        )
        started.append(srv)
        return srv.__enter__()

    yield start
    for srv in started:
        srv.stop()
