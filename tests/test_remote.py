"""Remote inspect over HTTP range requests: bounded reads, clear errors, never a full download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llamastudio.errors import AuthRequired, NotFound, RangeNotSupported
from llamastudio.gguf import facts_from_model, load_model
from tests.rig.http import serve_files


def test_remote_header_costs_at_most_3_requests_under_2mb(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["llama"]
    with serve_files(path.parent) as srv:
        model = load_model(f"{srv.url}/{path.name}")
        assert srv.requests <= 3
        assert srv.bytes_sent < 2 * 1024 * 1024
        assert srv.bytes_sent < path.stat().st_size / 10
        assert model.requests == srv.requests and model.bytes_fetched == srv.bytes_sent
    local = facts_from_model(load_model(str(path))).to_json()
    assert facts_from_model(model).to_json() == local


def test_remote_via_cli_json(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["gemma3"]
    with serve_files(path.parent) as srv:
        out = subprocess.run(
            [sys.executable, "-m", "llamastudio", "inspect", "--json", f"{srv.url}/{path.name}"],
            capture_output=True,
            text=True,
            check=True,
        )
    facts = json.loads(out.stdout)
    assert facts["architecture"] == "gemma3" and facts["sliding_window"] == 128
    assert facts["file_size"] == path.stat().st_size


def test_remote_split_model(split_model: list[Path]) -> None:
    with serve_files(split_model[0].parent) as srv:
        model = load_model(f"{srv.url}/{split_model[2].name}")
        assert len(model.parts) == 4
        assert srv.requests <= 4 * 3
    assert model.file_size == sum(p.stat().st_size for p in split_model)


def test_server_without_range_support_is_refused(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["llama"]
    with serve_files(path.parent, ranges=False) as srv:
        with pytest.raises(RangeNotSupported, match="range requests"):
            load_model(f"{srv.url}/{path.name}")
        assert srv.requests == 1
    # the CLI says so in one line with exit code 2
    with serve_files(path.parent, ranges=False) as srv:
        out = subprocess.run(
            [sys.executable, "-m", "llamastudio", "inspect", f"{srv.url}/{path.name}"],
            capture_output=True,
            text=True,
        )
    assert out.returncode == 2
    assert "range requests" in out.stderr and "Traceback" not in out.stderr


def test_token_is_sent_and_missing_token_is_explained(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["qwen3"]
    with serve_files(path.parent, token="hf_secret") as srv:
        with pytest.raises(AuthRequired, match="HF_TOKEN"):
            load_model(f"{srv.url}/{path.name}")
        assert (
            load_model(f"{srv.url}/{path.name}", token="hf_secret").metadata["general.architecture"]
            == "qwen3"
        )


def test_missing_remote_file(tiny_models: dict[str, Path]) -> None:
    with serve_files(tiny_models["qwen3"].parent) as srv, pytest.raises(NotFound):
        load_model(f"{srv.url}/nope.gguf")
