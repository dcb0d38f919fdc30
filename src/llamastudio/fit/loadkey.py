"""The key a load's measured memory is stored under (``measured.py``): the sha256 of

- the model's identity: per GGUF part, its size and the sha256 of its header (everything before
  the tensor data). Memory is decided by the header alone (hyperparameters, tensor shapes, types
  and offsets), never by the weights' values: a copy of the file elsewhere, or the same file
  downloaded again, shares the measurement; another quantization does not. The projector
  (``-mm``) and draft model (``-md``) are identified the same way.
- the engine build: the engine's id and its binary's size + mtime (a rebuild changes it).
- the flags: the argv the studio runs, file paths replaced by identities, flags that never change
  memory (``NEUTRAL``: host, port, alias, threads, sampling, templates, logging …) removed. A
  flag not listed stays in the key: a new flag may change memory, so a separate key is safe where
  a shared one would not be.
- the devices the estimate places it on (``CUDA0``, ``CPU`` …).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llamastudio.fit.argv import parse_server_args
from llamastudio.gguf import GGUFModel
from llamastudio.gguf.model import split_names


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# flags that never change what llama-server allocates: those taking a value, then switches
_NEUTRAL_VALUE = _words(
    "-m --model --host --port -a --alias -t --threads -tb --threads-batch --api-key "
    "--api-key-file --temp --top-k --top-p --min-p --typical --repeat-penalty --repeat-last-n "
    "--presence-penalty --frequency-penalty -s --seed -n --n-predict --predict --chat-template "
    "--chat-template-file --reasoning-format --reasoning-budget -lv --verbosity --log-verbosity "
    "--log-file --log-colors -to --timeout --threads-http --slot-save-path --spec-type "
    "--api-prefix --path --alias-file --slot-prompt-similarity -sps"
)
_NEUTRAL_BOOL = _words(
    "--jinja --no-jinja -v --verbose --log-verbose --log-prefix --no-log-prefix --log-timestamps "
    "--no-log-timestamps --log-disable --metrics --slots --no-slots --props --webui --no-webui "
    "--no-perf --perf --verbose-prompt"
)


@functools.lru_cache(maxsize=64)
def _part_identity(path: str, size: int, mtime_ns: int, header_bytes: int) -> str:
    """sha256 of one local part's header (blocking: reads at most the header's bytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = header_bytes
        while left > 0 and (chunk := f.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return f"{size}:{digest.hexdigest()[:24]}"


def model_identity(model: GGUFModel) -> str | None:
    """The identity of a local GGUF model (all of its parts); None for a remote one."""
    names = split_names(model.location)
    if len(names) != len(model.parts) or any(n.startswith(("http://", "https://")) for n in names):
        return None
    ids = []
    for name, part in zip(names, model.parts, strict=True):
        try:
            st = os.stat(name)
        except OSError:
            return None
        ids.append(_part_identity(name, st.st_size, st.st_mtime_ns, part.data_offset))
    return "+".join(ids)


def engine_build(engine_id: str, binary: Path) -> str:
    """The engine build part of a key: its id and its binary's size + mtime."""
    try:
        st = binary.stat()
    except OSError:
        return f"{engine_id}@missing"
    return f"{engine_id}@{st.st_size}:{st.st_mtime_ns}"


def memory_flags(argv: list[str], identities: dict[str, str]) -> list[str]:
    """The memory-relevant flags of a llama-server argv (without the program), with the files it
    names (model, projector, draft) replaced by their identities; order-independent."""
    kept: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, _ = token.partition("=") if token.startswith("--") else (token, "", "")
        if flag in _NEUTRAL_VALUE:
            i += 1 if eq else 2
            continue
        if flag in _NEUTRAL_BOOL:
            i += 1
            continue
        kept.append(identities.get(token, token))
        i += 1
    flags = parse_server_args(kept)
    flags = flags.with_(
        mmproj=identities.get(flags.mmproj or "", flags.mmproj),
        draft_model=identities.get(flags.draft_model or "", flags.draft_model),
    )
    return flags.to_args()


def memory_key(spec: dict[str, Any]) -> str:
    """The key of a load described by ``spec`` (``load_spec``)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def load_spec(
    model_id: str, build: str, argv: list[str], identities: dict[str, str], devices: list[str]
) -> dict[str, Any]:
    """What a key is made of, readable (stored beside the measurement)."""
    return {"model": model_id, "engine": build, "flags": memory_flags(argv, identities), "devices": devices}
