"""Other tools' model stores, used in place: Ollama's and LM Studio's.

Ollama (``$OLLAMA_MODELS`` or ``~/.ollama/models``): ``manifests/<registry>/<namespace>/<name>/<tag>``
are JSON manifests whose ``layers`` name blobs by digest and media type — the GGUF
(``application/vnd.ollama.image.model``), a projector (``.projector``), the Go chat template
(``.template``), default parameters (``.params``, JSON) and a system prompt (``.system``) — stored
as ``blobs/sha256-<hex>``. A digest is checked (``sha256:`` + 64 hex digits) before it is joined to
the blobs directory, so a manifest cannot name a path outside it. The parameters llama-server can
take become its flags; what it cannot (the Go template — the GGUF's own template is kept — the
system prompt, an adapter) is said in the model's ``notes``.

LM Studio (``~/.lmstudio/models`` or ``~/.cache/lm-studio/models``): ``<publisher>/<repo>/*.gguf``,
projectors beside them; added to the library as a directory (``library.py``).

Names: ``ollama/<name>:<tag>`` (``ollama/<namespace>/<name>:<tag>`` outside ``library``, the
registry host first when not Ollama's), ``lmstudio/<publisher>/<file without .gguf>``.
Blocking (file system): callers on the event loop run these in a thread.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamastudio.errors import InvalidInput, NotFound
from llamastudio.hub.library import find_ggufs, is_gguf

OLLAMA, LMSTUDIO = "ollama", "lmstudio"
SOURCES = (OLLAMA, LMSTUDIO)
MEDIA = "application/vnd.ollama.image."
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a manifest path segment
MAX_JSON = 1 << 20  # bytes of a manifest or params blob read at most
MAX_MANIFESTS = 10_000
DEFAULT_REGISTRY = "registry.ollama.ai"
# Ollama parameter → llama-server flag (b11434); values are checked as numbers / text
_FLAGS: dict[str, tuple[str, type]] = {
    "temperature": ("--temp", float),
    "top_k": ("--top-k", int),
    "top_p": ("--top-p", float),
    "min_p": ("--min-p", float),
    "typical_p": ("--typical", float),
    "num_ctx": ("--ctx-size", int),
    "num_predict": ("--n-predict", int),
    "num_keep": ("--keep", int),
    "num_batch": ("--batch-size", int),
    "repeat_penalty": ("--repeat-penalty", float),
    "repeat_last_n": ("--repeat-last-n", int),
    "presence_penalty": ("--presence-penalty", float),
    "frequency_penalty": ("--frequency-penalty", float),
    "seed": ("--seed", int),
    "mirostat": ("--mirostat", int),
    "mirostat_eta": ("--mirostat-lr", float),
    "mirostat_tau": ("--mirostat-ent", float),
}


@dataclass
class ForeignModel:
    name: str  # the gateway name, e.g. ollama/qwen3:8b
    path: str  # the GGUF used in place (an Ollama blob, an LM Studio file)
    source: str
    args: list[str] = field(default_factory=list)  # llama-server flags from Ollama's params
    notes: list[str] = field(default_factory=list)  # what llama-server cannot take, and why


@dataclass
class Found:
    models: list[ForeignModel]
    skipped: list[tuple[str, str]]  # (manifest or file, why): never dropped silently
    root: str


def default_root(source: str) -> Path:
    home = Path.home()
    if source == OLLAMA:
        env = os.environ.get("OLLAMA_MODELS")
        return Path(env).expanduser() if env else home / ".ollama" / "models"
    if source == LMSTUDIO:
        new = home / ".lmstudio" / "models"
        return new if new.is_dir() else home / ".cache" / "lm-studio" / "models"
    raise InvalidInput(f"--from {source!r}: one of {', '.join(SOURCES)}")


def discover(source: str, root: Path | None = None) -> Found:
    """The models of a store (``root``: its models directory, default the tool's own)."""
    base = (root or default_root(source)).expanduser()
    if not base.is_dir():
        raise NotFound(f"{base}: no {source} model store here (give its models directory with --path)")
    if source == OLLAMA:
        return _ollama(base)
    if source == LMSTUDIO:
        return _lmstudio(base)
    raise InvalidInput(f"--from {source!r}: one of {', '.join(SOURCES)}")


# -- Ollama ------------------------------------------------------------------------------------
def _ollama(root: Path) -> Found:
    manifests, blobs = root / "manifests", root / "blobs"
    if not manifests.is_dir() or not blobs.is_dir():
        raise InvalidInput(f"{root}: not an Ollama models directory (no manifests/ and blobs/)")
    found = Found([], [], str(root))
    for path in _manifest_files(manifests):
        rel = path.relative_to(manifests)
        try:
            found.models.append(_ollama_model(rel, path, blobs))
        except InvalidInput as exc:
            found.skipped.append((str(rel), exc.message))
    return found


def _manifest_files(manifests: Path) -> list[Path]:
    """``<registry>/<namespace>/<name>/<tag>`` files (links not followed, bounded)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(manifests):
        depth = len(Path(dirpath).relative_to(manifests).parts)
        if depth >= 3:
            dirnames.clear()
        if depth == 3:
            out.extend(Path(dirpath) / f for f in sorted(filenames))
        if len(out) > MAX_MANIFESTS:
            raise InvalidInput(f"{manifests}: more than {MAX_MANIFESTS:,} manifests")
    return sorted(out)


def _name(rel: Path) -> str:
    registry, namespace, model, tag = rel.parts
    if not all(_PART.match(p) for p in rel.parts):
        raise InvalidInput("its path is not a model name (letters, digits, . _ -)")
    prefix = "" if registry == DEFAULT_REGISTRY else f"{registry}/"
    prefix += "" if namespace == "library" and not prefix else f"{namespace}/"
    name = f"ollama/{prefix}{model}:{tag}"
    if not _NAME.match(name):
        raise InvalidInput(f"{name!r} is not a valid model name")
    return name


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read its {what}: {exc.strerror}") from exc
    if len(raw) > MAX_JSON:
        raise InvalidInput(f"its {what} is over {MAX_JSON >> 20} MiB")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"its {what} is not JSON ({str(exc)[:100]})") from exc


def blob_path(blobs: Path, digest: object) -> Path:
    """The blob of ``digest`` — only ``sha256:<64 hex>`` is joined to ``blobs`` (no traversal)."""
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise InvalidInput(f"layer digest {str(digest)[:80]!r} is not sha256:<64 hex digits>")
    path = blobs / f"sha256-{m.group(1)}"
    if not path.is_file():
        raise InvalidInput(f"its blob {path.name} is missing")
    return path


def _ollama_model(rel: Path, path: Path, blobs: Path) -> ForeignModel:
    name = _name(rel)
    manifest = _read_json(path, "manifest")
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise InvalidInput("its manifest has no list of layers")
    by_type: dict[str, list[Path]] = {}
    for layer in layers:
        media = layer.get("mediaType")
        if isinstance(media, str) and media.startswith(MEDIA):
            by_type.setdefault(media.removeprefix(MEDIA), []).append(blob_path(blobs, layer.get("digest")))
    weights = by_type.get("model", [])
    if len(weights) != 1:
        raise InvalidInput(f"its manifest has {len(weights)} model layers (one GGUF expected)")
    if not is_gguf(weights[0]):
        raise InvalidInput("its model blob is not a GGUF file (a model for Ollama's own engine)")
    model = ForeignModel(name=name, path=str(weights[0]), source=OLLAMA)
    for projector in by_type.get("projector", [])[:1]:
        if is_gguf(projector):
            model.args += ["--mmproj", str(projector)]
        else:
            model.notes.append("its projector blob is not a GGUF file: served without vision")
    for params in by_type.get("params", [])[:1]:
        model.args += _params(_read_json(params, "params"), model.notes)
    if by_type.get("template"):
        model.notes.append(
            "template: Ollama's Go template cannot be run by llama-server; the GGUF's own chat "
            "template is used"
        )
    if by_type.get("system"):
        model.notes.append("system: llama-server has no default system prompt; send it in the messages")
    if by_type.get("adapter"):
        model.notes.append("adapter: Ollama's LoRA adapter layer is not applied")
    return model


def _params(params: Any, notes: list[str]) -> list[str]:
    """llama-server flags for Ollama's parameters; the others named in ``notes``."""
    if not isinstance(params, dict):
        raise InvalidInput("its params layer is not a JSON object")
    args: list[str] = []
    for key, value in params.items():
        if key == "stop":
            words = value if isinstance(value, list) else [value]
            for word in words:
                if isinstance(word, str) and word and word.isprintable():
                    args += ["--reverse-prompt", word]
            continue
        flag = _FLAGS.get(key)
        if flag is None:
            notes.append(f"{key}: no llama-server flag for this Ollama parameter")
            continue
        kind = flag[1]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (kind is int and float(value) != int(value)):
            notes.append(f"{key}: {str(value)[:40]!r} is not a number")
            continue
        args += [flag[0], str(int(value)) if kind is int else str(float(value))]
    return args


# -- LM Studio ---------------------------------------------------------------------------------
def _lmstudio(root: Path) -> Found:
    found = Found([], [], str(root))
    for path in find_ggufs(root, max_depth=3, max_entries=100_000):
        rel = path.relative_to(root)
        if path.name.lower().startswith("mmproj") or re.search(r"-(?!00001)\d{5}-of-\d{5}\.gguf$", path.name):
            continue  # a projector, or a later part of a split model
        stem = re.sub(r"-00001-of-\d{5}$", "", path.name.removesuffix(".gguf"))
        name = f"lmstudio/{rel.parts[0]}/{stem}" if len(rel.parts) > 1 else f"lmstudio/{stem}"
        if any(m.name == name for m in found.models):  # the same file name in two repos
            name = f"lmstudio/{rel.parent.as_posix()}/{stem}"
        if not _NAME.match(name):
            found.skipped.append((str(rel), f"{name!r} is not a valid model name"))
            continue
        found.models.append(ForeignModel(name=name, path=str(path), source=LMSTUDIO))
    return found
