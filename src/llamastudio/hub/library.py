"""Every local model: the Hugging Face cache (shared with llama.cpp ``-hf``, huggingface_hub and
other tools, never duplicated) plus files and directories the user added (used in place).

Two formats: GGUF files (one model per quant, split parts together) and transformers checkpoints
(``config.json`` + ``*.safetensors`` shards: one model per snapshot or added directory)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import constants, scan_cache_dir
from sqlalchemy import select

from llamastudio.checkpoint import CONFIG, INDEX, is_checkpoint, read_checkpoint, read_config
from llamastudio.checkpoint.config import checkpoint_label
from llamastudio.errors import InvalidInput, NotFound, ScanLimit, StudioError
from llamastudio.gguf import facts_from_model, load_model
from llamastudio.hub.quants import quant_label
from llamastudio.store import Database
from llamastudio.store.models import LibraryPathRow

log = logging.getLogger(__name__)

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
MAX_DEPTH = 8  # directory levels below an added directory that are searched for GGUF files
MAX_ENTRIES = 50_000  # directory entries looked at in one added directory before giving up
GGUF_MAGIC = b"GGUF"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return exc.strerror or type(exc).__name__


def resolve_local(path: Path) -> Path:
    """``path`` with ``~`` and every symlink resolved; a missing path is a 404, a symlink loop or
    an unreadable path a 400 — never a ``RuntimeError`` / ``OSError`` (500, or a traceback)."""
    try:
        return path.expanduser().resolve(strict=True)
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such file or directory") from exc
    except RuntimeError as exc:  # Python < 3.13 reports a symlink loop this way
        raise InvalidInput(f"{path}: symlink loop") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: {_os_reason(exc)}") from exc


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a readable regular file that starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def check_gguf(path: Path) -> Path:
    """Refuse (400) anything that is not a readable GGUF file; the message never quotes its bytes."""
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidInput(f"{path} is not a regular file")
            magic = f.read(4)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({_os_reason(exc)})") from exc
    if magic != GGUF_MAGIC:
        raise InvalidInput(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
    return path


def find_ggufs(root: Path, max_depth: int | None = None, max_entries: int | None = None) -> list[Path]:
    """``*.gguf`` files under ``root`` that really are GGUF, searched breadth-first without
    following symlinked directories (no loops), at most ``max_depth`` levels deep; more than
    ``max_entries`` directory entries is refused with :class:`ScanLimit` rather than walked."""
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    max_entries = MAX_ENTRIES if max_entries is None else max_entries
    found: list[Path] = []
    seen = 0
    level = [root]
    for depth in range(max_depth + 1):
        below: list[Path] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                if directory == root:
                    raise InvalidInput(f"{root}: cannot read it ({_os_reason(exc)})") from exc
                continue  # an unreadable subdirectory is skipped
            seen += len(entries)
            if seen > max_entries:
                raise ScanLimit(
                    f"{root} holds more than {max_entries:,} files and folders: add the directory "
                    "that holds the models, not a parent of it"
                )
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth < max_depth:
                            below.append(Path(entry.path))
                    elif entry.name.endswith(".gguf") and is_gguf(Path(entry.path)):
                        found.append(Path(entry.path))
                except OSError:
                    continue
        level = below
    return found


def served_name_for(path: Path) -> str:
    """A name the gateway can serve an added file under: its stem (without a split suffix) when
    that is already a valid model name, else with every run of characters other than ASCII
    letters, digits and ``. _ : @ + -`` turned into ``-`` (accents dropped first: ``café`` →
    ``cafe``), or ``model-<hash of the path>`` when nothing is left (a name in another script)."""
    stem = path.name.removesuffix(".gguf")
    stem = re.sub(r"-00001-of-\d{5}$", "", stem)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}", stem):
        return stem
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", ascii_stem).strip("-._:@+")[:200]
    if not name or not name[0].isalnum():
        name = "model-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return name


@dataclass
class LocalModel:
    # GGUF: "repo:QUANT" for the HF cache, the first file's path for added models;
    # safetensors: "repo" for the HF cache, the directory for added checkpoints
    id: str
    # GGUF: the file to pass to llama-server -m (first shard of a split model);
    # safetensors: the checkpoint's directory (the snapshot, or the added directory)
    path: str
    files: list[str]
    size: int
    quant: str  # GGUF: the quant; safetensors: the quantization (AWQ, FP8, ...) or the dtype
    source: str  # "hf-cache" | "added"
    repo: str | None = None
    revision: str | None = None
    mmproj: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    other_quants: list[str] = field(default_factory=list)  # of the same repo, present locally
    served_name: str = ""  # added models: a gateway name derived from the file name (see served_name_for)
    format: str = "gguf"  # "gguf" | "safetensors"

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
        "role": f.role,
        "pooling": f.pooling,
        "chat_template": f.chat_template,
        "template_family": f.template_family,
        "tools": f.tools,
        "embedding_length": f.embedding_length,
    }


def _checkpoint_facts(directory: Path) -> dict[str, Any]:
    try:
        return read_checkpoint(directory).facts()
    except StudioError as exc:
        return {"error": exc.message}


def _checkpoint_label(directory: Path, name: str) -> str:
    """The checkpoint's "quant": from config.json alone (cheap, on every listing); a config that
    cannot be read gets the generic label, and its facts say why."""
    try:
        return checkpoint_label(read_config(directory), name)
    except StudioError:
        return checkpoint_label({}, name)


def _checkpoint_files(directory: Path) -> tuple[list[str], int]:
    """(the checkpoint directory's own files, their total size): not GGUFs beside it, nor
    subdirectories."""
    files, size = [], 0
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        try:
            if entry.name.endswith(".gguf") or not entry.is_file():
                continue
            size += entry.stat().st_size
        except OSError:
            continue
        files.append(entry.path)
    return files, size


class Library:
    def __init__(self, db: Database, hub_cache: Path | None = None) -> None:
        self.db = db
        self.hub_cache = hub_cache or Path(constants.HF_HUB_CACHE)

    def add(self, path: Path) -> list[LocalModel]:
        """Blocking (a directory is searched): call it off the event loop."""
        target = resolve_local(path)
        if target.is_file():
            if target.suffix != ".gguf":
                hint = (
                    " (add a safetensors checkpoint by its directory)"
                    if target.suffix == ".safetensors"
                    else ""
                )
                raise InvalidInput(f"{path} is not a .gguf file{hint}")
            check_gguf(target)
        elif not target.is_dir():
            raise InvalidInput(f"{path} is neither a file nor a directory")
        elif (target / CONFIG).is_file() and (
            any(target.glob("*.safetensors")) or (target / INDEX).is_file()
        ):
            read_checkpoint(target)  # a checkpoint is refused, with the reason, unless every header reads
        found = self._added_models(target)
        if not found and target.is_dir() and any(target.glob("*.safetensors")):
            read_config(target)  # safetensors weights without config.json: says so
        if not found:
            raise InvalidInput(f"{path}: no GGUF model or transformers checkpoint found")
        with self.db.session() as s, s.begin():
            if s.get(LibraryPathRow, str(target)) is None:
                s.add(LibraryPathRow(path=str(target)))
        return found

    def _added_models(self, root: Path) -> list[LocalModel]:
        paths = ([root] if is_gguf(root) else []) if root.is_file() else find_ggufs(root)
        out = [self._added_checkpoint(root)] if root.is_dir() and is_checkpoint(root) else []
        for parts in _group(paths):
            try:
                size = sum(p.stat().st_size for p in parts)
            except OSError:
                continue  # vanished or became unreadable since the search
            near = parts[0].parent.glob("mmproj*.gguf") if root.is_file() else paths
            mm = sorted(str(p) for p in near if p.parent == parts[0].parent and _is_mmproj(p) and is_gguf(p))
            out.append(
                LocalModel(
                    id=str(parts[0]),
                    path=str(parts[0]),
                    files=[str(p) for p in parts],
                    size=size,
                    quant=quant_label(parts[0].name),
                    source="added",
                    mmproj=mm,
                    served_name=served_name_for(parts[0]),
                )
            )
        return out

    def _added_checkpoint(self, root: Path) -> LocalModel:
        files, size = _checkpoint_files(root)
        return LocalModel(
            id=str(root),
            path=str(root),
            files=files,
            size=size,
            quant=_checkpoint_label(root, root.name),
            source="added",
            served_name=served_name_for(root),
            format="safetensors",
        )

    def _cache_checkpoint(self, repo_id: str, commit: str, snapshot: Path) -> LocalModel | None:
        """The snapshot's checkpoint (``config.json`` + every shard at its root), or None."""
        if not is_checkpoint(snapshot):
            return None
        files, size = _checkpoint_files(snapshot)
        return LocalModel(
            id=repo_id,
            path=str(snapshot),
            files=files,
            size=size,
            quant=_checkpoint_label(snapshot, repo_id),
            source="hf-cache",
            repo=repo_id,
            revision=commit,
            format="safetensors",
        )

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
                checkpoint = self._cache_checkpoint(repo.repo_id, rev.commit_hash, rev.snapshot_path)
                if checkpoint is not None:
                    out.append(checkpoint)
        return out

    def models(self, with_facts: bool = True) -> list[LocalModel]:
        with self.db.session() as s:
            added = [Path(p) for p in s.scalars(select(LibraryPathRow.path))]
        models = self._cache_models()
        for root in added:
            try:
                if root.exists():
                    models += self._added_models(root)
            except (StudioError, OSError) as exc:  # one bad added path must not hide the others
                log.warning("library: skipping %s: %s", root, getattr(exc, "message", exc))
        by_repo: dict[tuple[str, str], list[str]] = {}
        for m in models:
            if m.repo:
                by_repo.setdefault((m.repo, m.format), []).append(m.quant)
        for m in models:
            m.other_quants = [q for q in by_repo.get((m.repo or "", m.format), []) if q != m.quant]
            if with_facts:
                checkpoint = m.format == "safetensors"
                m.facts = _checkpoint_facts(Path(m.path)) if checkpoint else _facts(Path(m.path))
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
        target = model_id
        if model_id.startswith(("/", "~")):
            try:
                target = str(Path(model_id).expanduser().resolve())
            except (RuntimeError, OSError):  # a symlink loop: forget it under the name given
                target = model_id
        with self.db.session() as s, s.begin():
            row = s.get(LibraryPathRow, target)
            if row is not None and not delete_files:
                s.delete(row)
                return [target]
        model = self.get(model_id)
        if model.source == "hf-cache":
            cache = self.hub_cache.resolve()
            for f in model.files:
                link = Path(f)
                blob = link.resolve()
                link.unlink(missing_ok=True)
                if cache not in blob.parents:
                    continue  # a link out of the cache: its target is not ours to delete
                # blobs are per repo (models--x/blobs): only that repo's snapshots may still use it
                snapshots = blob.parent.parent / "snapshots"
                if not any(p.resolve() == blob for p in snapshots.rglob("*") if p.is_symlink()):
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
