"""Group a repo's GGUF files by quantization: shards as one set, mmproj files as companions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")
_QUANT = re.compile(
    r"(?:^|[-._])((?:UD-)?(?:i1-)?(?:I?Q[1-8](?:_[0-9A-Z]+)*|BF16|F16|F32|FP16|FP32|MXFP4(?:_MOE)?|TQ[12]_0))$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None = None


@dataclass
class QuantGroup:
    label: str
    files: list[RepoFile]  # shards in order
    mmproj: list[RepoFile] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def first(self) -> RepoFile:
        return self.files[0]


def quant_label(path: str) -> str:
    """``Qwen3-8B-UD-Q4_K_XL-00001-of-00002.gguf`` → ``UD-Q4_K_XL``; an unknown label is the stem."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    stem = _SHARD.sub("", stem)
    m = _QUANT.search(stem)
    if not m:
        return stem
    label = m.group(1)
    prefix, _, rest = label.rpartition("-")
    return f"{prefix}-{rest.upper()}" if prefix else label.upper()


def group_files(files: list[RepoFile]) -> list[QuantGroup]:
    """Quant groups sorted by size; split parts must all be present to form a group."""
    ggufs = [f for f in files if f.path.endswith(".gguf")]
    mmproj = [f for f in ggufs if f.path.rsplit("/", 1)[-1].lower().startswith("mmproj")]
    groups: dict[str, list[RepoFile]] = {}
    for f in ggufs:
        if f in mmproj:
            continue
        key = quant_label(f.path)
        directory = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
        groups.setdefault(f"{directory}\0{key}", []).append(f)
    out = []
    for key, members in groups.items():
        members.sort(key=lambda f: f.path)
        m = _SHARD.search(members[0].path.removesuffix(".gguf"))
        if m and len(members) != int(m.group(2)):
            continue  # an incomplete split set is not a usable quant
        out.append(QuantGroup(key.split("\0")[1], members, list(mmproj)))
    return sorted(out, key=lambda g: g.size)


def mmproj_preference(path: str) -> tuple[bool, str]:
    """Sort key of a repo's projector files: F16 first (full quality, what a pull fetches), then by
    name."""
    return ("f16" not in path.rsplit("/", 1)[-1].lower(), path)


def find_group(groups: list[QuantGroup], label: str) -> QuantGroup:
    from llamastudio.errors import NotFound

    for g in groups:
        if g.label.lower() == label.lower():
            return g
    known = ", ".join(g.label for g in groups) or "none"
    raise NotFound(f"no quant {label!r} in this repo (available: {known})")
