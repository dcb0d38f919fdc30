"""Ollama's and LM Studio's models used in place (issue M #4): an Ollama-layout store (manifests +
``sha256-…`` blobs, params and a Go template) and an LM Studio-layout directory built from the
rig's tiny model (hard links: the same file), both added and served — the engine runs the very
file (same inode), Ollama's params became llama-server flags, the template is reported; malformed
manifests are skipped with the reason, and a store with nothing usable is a clear 400."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.hub import foreign
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio
from tests.rig.vision import png_bytes, write_vision_pair

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
PARAMS = {"temperature": 0.5, "num_ctx": 256, "top_k": 20, "stop": ["</s>"], "num_thread": 1, "flash": "x"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("foreign-model") / "tiny.gguf"
    BUILDERS["llama"](path, Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf"))
    return path


def _blob(root: Path, data: bytes | None = None, link: Path | None = None) -> str:
    """Store a blob as Ollama does; ``link``: the file itself (hard link, no copy)."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(link.read_bytes() if link else data or b"").hexdigest()
    target = blobs / f"sha256-{digest}"
    if not target.exists():
        os.link(link, target) if link else target.write_bytes(data or b"")
    return f"sha256:{digest}"


def _manifest(root: Path, name: str, tag: str, layers: list[dict[str, Any]] | str) -> None:
    path = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (
        layers
        if isinstance(layers, str)
        else json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": layers})
    )
    path.write_text(body)


def _layer(kind: str, digest: str) -> dict[str, Any]:
    return {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": digest, "size": 1}


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    root = tmp_path_factory.mktemp("ollama") / "models"
    model = _blob(root, link=tiny)
    params = _blob(root, json.dumps(PARAMS).encode())
    template = _blob(root, b"{{ if .System }}<|system|>{{ .System }}{{ end }}{{ .Prompt }}")
    _manifest(
        root,
        "tiny",
        "latest",
        [_layer("model", model), _layer("params", params), _layer("template", template)],
    )
    # a vision model: its projector layer becomes --mmproj
    vision_model, vision_proj = write_vision_pair(root.parent / "vision-src")
    _manifest(
        root,
        "tinyvision",
        "q8",
        [_layer("model", _blob(root, link=vision_model)), _layer("projector", _blob(root, link=vision_proj))],
    )
    # malformed: each skipped with its reason, the good one still added
    _manifest(root, "notjson", "latest", "{not json")
    _manifest(root, "escape", "latest", [_layer("model", "sha256:../../../../etc/passwd")])
    _manifest(root, "missing", "latest", [_layer("model", "sha256:" + "0" * 64)])
    _manifest(root, "nomodel", "latest", [_layer("params", params)])
    _manifest(root, "notgguf", "latest", [_layer("model", _blob(root, b"safetensors, not a GGUF"))])
    return root


@pytest.fixture(scope="module")
def lmstudio(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    root = tmp_path_factory.mktemp("lmstudio") / "models"
    repo = root / "tiny-pub" / "tiny-repo-GGUF"
    repo.mkdir(parents=True)
    os.link(tiny, repo / "tiny-lm.gguf")
    return root


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with Studio(tmp_path_factory.mktemp("foreign-studio"), binaries.binary("llama-server")) as s:
        yield s


def _engine_argv(studio: Studio, name: str) -> list[str]:
    """The real argv of the running engine of ``name`` (from /proc)."""
    with studio.api() as c:
        running = next(m for m in c.get("/api/running").json() if m["name"] == name)
    return [a.decode() for a in Path(f"/proc/{running['pid']}/cmdline").read_bytes().split(b"\0")]


def _engine_model(studio: Studio, name: str) -> Path:
    """The file the running engine of ``name`` was given with ``-m``."""
    argv = _engine_argv(studio, name)
    return Path(argv[argv.index("-m") + 1])


def _chat(studio: Studio, name: str) -> None:
    with studio.gateway() as g:
        r = g.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
    assert r.status_code == 200, r.text


def test_ollama_store_in_place(studio: Studio, ollama: Path, tiny: Path) -> None:
    with studio.api() as c:
        preview = c.get("/api/library/foreign", params={"source": "ollama", "path": str(ollama)})
    assert preview.status_code == 200 and preview.json()["added"] is False
    done = studio.cli("models", "add", "--from", "ollama", "--path", str(ollama))
    assert "added ollama/tiny:latest" in done.stdout
    assert "Go template cannot be run by llama-server" in done.stdout
    skipped = done.stderr
    for name, why in [
        ("notjson", "not JSON"),
        ("escape", "not sha256:<64 hex digits>"),
        ("missing", "is missing"),
        ("nomodel", "0 model layers"),
        ("notgguf", "not a GGUF"),
    ]:
        assert f"library/{name}/latest: " in skipped and why in skipped, (name, skipped)

    assert studio.status("ollama/tiny:latest")["state"] == "stopped"
    _chat(studio, "ollama/tiny:latest")
    served = _engine_model(studio, "ollama/tiny:latest")
    args = _engine_argv(studio, "ollama/tiny:latest")
    for flag, value in [
        ("--temp", "0.5"),
        ("-c", "256"),  # num_ctx: --ctx-size, spelled -c by the planner (auto)
        ("--top-k", "20"),
        ("--reverse-prompt", "</s>"),
    ]:
        assert flag in args and args[args.index(flag) + 1] == value, " ".join(
            args
        )  # Ollama's params, as llama-server flags
    assert served.parent == ollama / "blobs" and served.stat().st_ino == tiny.stat().st_ino  # no copy


def test_lmstudio_dir_in_place(studio: Studio, lmstudio: Path, tiny: Path) -> None:
    with studio.api() as c:
        r = c.post("/api/library/foreign", json={"source": "lmstudio", "path": str(lmstudio)})
        assert r.status_code == 201, r.text
        assert [m["name"] for m in r.json()["models"]] == ["lmstudio/tiny-pub/tiny-lm"]
        assert any(
            m["path"] == str(lmstudio / "tiny-pub/tiny-repo-GGUF/tiny-lm.gguf")
            for m in c.get("/api/models").json()
        )
    _chat(studio, "lmstudio/tiny-pub/tiny-lm")
    assert _engine_model(studio, "lmstudio/tiny-pub/tiny-lm").stat().st_ino == tiny.stat().st_ino


def test_unusable_stores_are_clear_4xx(studio: Studio, tmp_path: Path, ollama: Path) -> None:
    bad = tmp_path / "bad"
    _manifest(bad, "escape", "latest", [_layer("model", "sha256:../../../x")])
    (bad / "blobs").mkdir()
    with studio.api() as c:
        r = c.post("/api/library/foreign", json={"source": "ollama", "path": str(bad)})
        assert r.status_code == 400 and "no usable ollama GGUF model" in r.json()["error"]["message"], r.text
        assert "sha256:<64 hex digits>" in r.json()["error"]["message"]
        r = c.post("/api/library/foreign", json={"source": "ollama", "path": str(tmp_path / "none")})
        assert r.status_code == 404 and "no ollama model store" in r.json()["error"]["message"]
        r = c.post("/api/library/foreign", json={"source": "ollama", "path": str(tmp_path)})
        assert r.status_code == 400 and "not an Ollama models directory" in r.json()["error"]["message"]
        r = c.post("/api/library/foreign", json={"source": "ollama", "path": "relative/dir"})
        assert r.status_code == 400 and "absolute" in r.json()["error"]["message"]
        r = c.post("/api/library/foreign", json={"source": "gpt4all"})
        assert r.status_code in (400, 422) and "error" in r.json()
    assert not (ollama.parent / "x").exists()
    done = studio.cli("models", "add", "--from", "nope", check=False)
    assert done.returncode == 2 and "ollama, lmstudio" in done.stderr and "Traceback" not in done.stderr


def test_ollama_projector_is_the_mmproj(studio: Studio, ollama: Path) -> None:
    """Runs after the store was added (test order): the vision model answers an image."""
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": image}}]
    with studio.gateway() as g:
        r = g.post(
            "/v1/chat/completions",
            json={
                "model": "ollama/tinyvision:q8",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 2,
            },
        )
    assert r.status_code == 200, r.text
    argv = _engine_argv(studio, "ollama/tinyvision:q8")
    assert "--mmproj" in argv or "-mm" in argv, " ".join(argv)
    mmproj = Path(argv[argv.index("--mmproj" if "--mmproj" in argv else "-mm") + 1])
    assert (
        mmproj.parent == ollama / "blobs"
        and mmproj.stat().st_ino == (ollama.parent / "vision-src" / "mmproj-tiny-llava.gguf").stat().st_ino
    )


def test_lmstudio_names_stay_distinct(tmp_path: Path, tiny: Path) -> None:
    for repo in ("a-GGUF", "b-GGUF"):
        (tmp_path / "pub" / repo).mkdir(parents=True)
        os.link(tiny, tmp_path / "pub" / repo / "m-Q8_0.gguf")
    names = [m.name for m in foreign.discover("lmstudio", tmp_path).models]
    assert names == ["lmstudio/pub/m-Q8_0", "lmstudio/pub/b-GGUF/m-Q8_0"]


def test_ollama_params_map_to_flags_or_notes() -> None:
    notes: list[str] = []
    args = foreign._params(
        {"temperature": 1, "num_ctx": 8192.0, "top_k": 2.5, "stop": ["a", 3], "num_gpu": 99}, notes
    )
    assert args == ["--temp", "1.0", "--ctx-size", "8192", "--reverse-prompt", "a"]
    assert any(n.startswith("top_k: ") for n in notes) and any(n.startswith("num_gpu: ") for n in notes)
    with pytest.raises(InvalidInput, match="not a JSON object"):
        foreign._params(["x"], [])
    with pytest.raises(InvalidInput, match="sha256:<64 hex digits>"):
        foreign.blob_path(Path("/nonexistent"), "sha256:" + "A" * 64)  # upper case is not a digest
