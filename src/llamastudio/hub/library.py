"""Every local model: the Hugging Face cache (shared with llama.cpp ``-hf``, huggingface_hub and
other tools, never duplicated) plus files and directories the user added (used in place)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants, scan_cache_dir
from sqlalchemy import select

from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.gguf import facts_from_model, load_model
from llamastudio.hub.quants import quant_label
from llamastudio.store import Database
from llamastudio.store.models import LibraryPathRow

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass
class LocalModel:
    id: str  # "repo:QUANT" for the HF cache, the first file's path for added models
    path: str  # the file to pass to llama-server -m (first shard of a split model)
    files: list[str]
    size: int
    quant: str
    source: str  # "hf-cache" | "added"
    repo: str | None = None
    revision: str | None = None
    mmproj: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    other_quants: list[str] = field(default_factory=list)  # of the same repo, present locally

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_mmproj(path: Path) -> bool:
    return path.name.lower().startswith("mmproj")


def _group(paths: list[Path]) -> list[list[Path]]:
    """Split parts together (only complete sets), single files alone; mmproj files excluded."""
    singles: list[list[Path]] = []
    splits: dict[tuple[Path, str], list[Path]] = {}
    counts: dict[tuple[Path, str], int] = {}
    for p in sorted(paths):
        if _is_mmproj(p):
            continue
        m = _SHARD.search(p.name)
        if m:
            key = (p.parent, _SHARD.sub("", p.name))
            splits.setdefault(key, []).append(p)
            counts[key] = int(m.group(2))
        else:
            singles.append([p])
    complete = [parts for key, parts in splits.items() if len(parts) == counts[key]]
    return singles + complete


def _facts(path: Path) -> dict[str, Any]:
    try:
        f = facts_from_model(load_model(str(path)))
    except StudioError as exc:
        return {"error": exc.message}
    return {
        "architecture": f.architecture,
        "parameter_count": f.parameter_count,
        "context_length": f.context_length,
        "file_type": f.file_type_name,
        "name": f.general.get("name"),
        "license": f.general.get("license"),
    }


class Library:
    def __init__(self, db: Database, hub_cache: Path | None = None) -> None:
        self.db = db
        self.hub_cache = hub_cache or Path(constants.HF_HUB_CACHE)

    def add(self, path: Path) -> list[LocalModel]:
        target = path.expanduser().resolve()
        if not target.exists():
            raise NotFound(f"{path}: no such file or directory")
        if target.is_file() and target.suffix != ".gguf":
            raise InvalidInput(f"{path} is not a .gguf file")
        found = self._added_models(target)
        if not found:
            raise InvalidInput(f"{path}: no GGUF model found")
        with self.db.session() as s, s.begin():
            if s.get(LibraryPathRow, str(target)) is None:
                s.add(LibraryPathRow(path=str(target)))
        return found

    def _added_models(self, root: Path) -> list[LocalModel]:
        paths = [root] if root.is_file() else [p for p in root.rglob("*.gguf") if p.is_file()]
        out = []
        for parts in _group(paths):
            mm = [str(p) for p in parts[0].parent.glob("mmproj*.gguf")]
            out.append(
                LocalModel(
                    id=str(parts[0]),
                    path=str(parts[0]),
                    files=[str(p) for p in parts],
                    size=sum(p.stat().st_size for p in parts),
                    quant=quant_label(parts[0].name),
                    source="added",
                    mmproj=mm,
                )
            )
        return out

    def _cache_models(self) -> list[LocalModel]:
        if not self.hub_cache.exists():
            return []
        out = []
        for repo in scan_cache_dir(self.hub_cache).repos:
            if repo.repo_type != "model":
                continue
            for rev in repo.revisions:
                files = [f.file_path for f in rev.files if f.file_name.endswith(".gguf")]
                mm = [str(p) for p in files if _is_mmproj(p)]
                for parts in _group(files):
                    label = quant_label(parts[0].name)
                    out.append(
                        LocalModel(
                            id=f"{repo.repo_id}:{label}",
                            path=str(parts[0]),
                            files=[str(p) for p in parts],
                            size=sum(p.stat().st_size for p in parts),
                            quant=label,
                            source="hf-cache",
                            repo=repo.repo_id,
                            revision=rev.commit_hash,
                            mmproj=mm,
                        )
                    )
        return out

    def models(self, with_facts: bool = True) -> list[LocalModel]:
        with self.db.session() as s:
            added = [Path(p) for p in s.scalars(select(LibraryPathRow.path))]
        models = self._cache_models()
        for root in added:
            if root.exists():
                models += self._added_models(root)
        by_repo: dict[str, list[str]] = {}
        for m in models:
            if m.repo:
                by_repo.setdefault(m.repo, []).append(m.quant)
        for m in models:
            m.other_quants = [q for q in by_repo.get(m.repo or "", []) if q != m.quant]
            if with_facts:
                m.facts = _facts(Path(m.path))
        return models

    def added_paths(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(LibraryPathRow.path)))

    def get(self, model_id: str) -> LocalModel:
        for m in self.models(with_facts=False):
            if m.id == model_id or m.path == model_id:
                return m
        raise NotFound(f"no local model {model_id!r} (see `llamastudio ls`)")

    def remove(self, model_id: str, delete_files: bool = False) -> list[str]:
        """Returns what was removed. HF-cache models: their snapshot links, and blobs no other
        snapshot uses. An added path (file or directory): forgotten, files untouched. A model found
        inside an added directory: its files are deleted only with ``delete_files``."""
        target = str(Path(model_id).expanduser().resolve()) if "/" in model_id else model_id
        with self.db.session() as s, s.begin():
            row = s.get(LibraryPathRow, target)
            if row is not None and not delete_files:
                s.delete(row)
                return [target]
        model = self.get(model_id)
        if model.source == "hf-cache":
            for f in model.files:
                link = Path(f)
                blob = link.resolve()
                link.unlink(missing_ok=True)
                if not any(p.resolve() == blob for p in self.hub_cache.rglob("*") if p.is_symlink()):
                    blob.unlink(missing_ok=True)
            return model.files
        if not delete_files:
            raise InvalidInput(
                f"{model.path} is inside an added directory: pass --delete-files to delete it, "
                "or remove the directory from the library"
            )
        for f in model.files:
            Path(f).unlink(missing_ok=True)
        with self.db.session() as s, s.begin():
            row = s.get(LibraryPathRow, model.path)
            if row is not None:
                s.delete(row)
        return model.files
