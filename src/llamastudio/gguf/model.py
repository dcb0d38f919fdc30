"""One model = one GGUF file, or all parts of a split model (``*-00001-of-0000N.gguf``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import httpx

from llamastudio.errors import GGUFError, NotFound
from llamastudio.gguf.reader import GGUFHeader, TensorInfo, read_header
from llamastudio.gguf.source import ByteSource, HttpSource, LocalSource, is_url

SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(slots=True)
class GGUFModel:
    """Metadata of the first part and the tensor table of every part."""

    location: str
    parts: list[GGUFHeader]
    requests: int = 0  # HTTP requests made to read the headers (0 for local files)
    bytes_fetched: int = 0

    @property
    def metadata(self) -> dict[str, Any]:
        return self.parts[0].metadata

    @property
    def tensors(self) -> list[TensorInfo]:
        return [t for p in self.parts for t in p.tensors]

    @property
    def file_size(self) -> int:
        return sum(p.file_size for p in self.parts)


def split_names(location: str) -> list[str]:
    """All part locations of a split model given any one part; ``[location]`` otherwise."""
    head, sep, query = location.partition("?")
    base = head.rsplit("/", 1)
    match = SPLIT_RE.match(base[-1])
    if not match:
        return [location]
    count = int(match.group("count"))
    if count < 1 or int(match.group("no")) > count:
        raise GGUFError(f"{location}: bad split name (part {match.group('no')} of {count})")
    names = []
    for i in range(1, count + 1):
        name = f"{match.group('prefix')}-{i:05d}-of-{count:05d}.gguf"
        full = f"{base[0]}/{name}" if len(base) == 2 else name
        names.append(full + sep + query)
    return names


def _open(location: str, token: str | None, client: httpx.Client | None) -> ByteSource:
    if is_url(location):
        return HttpSource(location, token=token, client=client)
    if not Path(location).exists():
        raise NotFound(f"{location}: no such file")
    return LocalSource(Path(location))


def load_model(
    location: str,
    *,
    token: str | None = None,
    client: httpx.Client | None = None,
    opener: Callable[[str], ByteSource] | None = None,
) -> GGUFModel:
    """Read the headers of a model (all parts of a split one) without reading tensor data.

    ``opener`` replaces how each part is opened (the Hub layer uses it to cache remote headers)."""
    names = split_names(location)
    model = GGUFModel(location=location, parts=[])
    for i, name in enumerate(names):
        src = opener(name) if opener else _open(name, token, client)
        try:
            model.parts.append(read_header(src, part=i))
        finally:
            if isinstance(src, HttpSource):
                model.requests += src.requests
                model.bytes_fetched += src.bytes_fetched
            src.close()
    _check_split(model)
    return model


def _check_split(model: GGUFModel) -> None:
    count = model.metadata.get(gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    if count is None:
        if len(model.parts) > 1:
            raise GGUFError(f"{model.location}: named as a split model but has no split.count key")
        return
    if count != len(model.parts):
        raise GGUFError(f"{model.location}: split.count is {count} but {len(model.parts)} parts were found")
    expected = model.metadata.get(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    if expected is not None and expected != len(model.tensors):
        raise GGUFError(
            f"{model.location}: split.tensors.count is {expected}, the parts hold {len(model.tensors)}"
        )
    for i, part in enumerate(model.parts):
        if part.metadata.get(gguf.Keys.Split.LLM_KV_SPLIT_NO, i) != i:
            raise GGUFError(f"{part.name}: split.no is {part.metadata.get('split.no')}, expected {i}")
