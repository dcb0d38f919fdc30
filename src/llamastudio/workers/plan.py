"""Planning a llama.cpp model across RPC workers.

A configuration opts in with ``--rpc auto`` (use the registered workers when the model does not
fit this host alone), ``--rpc always`` or ``--rpc never`` (the default, as without ``--rpc``);
``--rpc HOST:PORT,…`` is llama.cpp's own and passes through unplanned.

llama.cpp puts the RPC devices before the local ones (llama.cpp ``llama_model_load``: "add RPC
servers at the front of the list") and names them ``RPC0``, ``RPC1``… in that order; ``-ts``
splits the offloaded layers over that list. So each worker device becomes an estimator device
(backend ``RPC``) with the memory the worker offers (``--mem``, else its free memory), the split
is proportional to those figures and the local GPUs' free memory, and the estimate per device is
checked against what each worker offers. Builds must match: the RPC protocol and the graph code
change between llama.cpp builds, so a worker on another build is refused.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from llamastudio.engines.registry import Engine
from llamastudio.errors import DoesNotFit, InvalidInput, StartFailed
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.usage import Estimate
from llamastudio.gguf import GGUFModel
from llamastudio.hardware.devices import Gpu, Hardware
from llamastudio.store import Database
from llamastudio.workers.registry import StoredWorker, load

MODES = ("auto", "always", "never")
MiB = 1 << 20
SLOW_LINK_MIB_S = 100.0  # below gigabit Ethernet (~118 MiB/s): loading and prompts crawl


@dataclass
class RpcPlan:
    args: list[str]  # the configuration's args with --rpc endpoints and -ts filled in
    hardware: Hardware  # this host's, with the workers' devices first
    offered: dict[str, int]  # RPC device name -> bytes its worker offers
    endpoints: list[str]
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rpc_mode(args: list[str]) -> tuple[str, int]:
    """(mode, index of ``--rpc``): ``never`` without one, ``manual`` for llama.cpp's own list."""
    if "--rpc" not in args:
        return "never", -1
    i = args.index("--rpc")
    value = args[i + 1] if i + 1 < len(args) else ""
    if value in MODES:
        return value, i
    if not value:
        raise InvalidInput("--rpc needs a value: auto, always, never or HOST:PORT,…")
    return "manual", i


def check_builds(workers: list[StoredWorker], engine: Engine, model: str) -> None:
    """Refuse workers whose llama.cpp build differs from the engine that would load ``model``."""
    for w in workers:
        build = w.status.get("llama_cpp") or {}
        theirs = (str(build.get("version") or ""), str(build.get("commit") or ""))
        ours = (engine.version, engine.commit)
        if theirs != ours:
            raise InvalidInput(
                f"{model}: worker {w.endpoint} runs llama.cpp {theirs[0] or '?'} (commit {theirs[1] or '?'}) "
                f"but the engine {engine.id} that loads this model is {ours[0] or '?'} (commit "
                f"{ours[1] or '?'}): RPC needs the same build on every host; run the worker from the "
                "same llama.cpp build, or pin this model to a matching engine"
            )


def _alive(w: StoredWorker) -> bool:
    return bool((w.status.get("rpc") or {}).get("alive")) and bool(w.status.get("devices"))


def unreachable(workers: list[StoredWorker], timeout: float = 1.0) -> list[str]:
    """The workers whose rpc-server does not accept a connection now, each with why (blocking).
    A dead worker would otherwise make llama-server abort in its RPC handshake."""
    out = []
    for w in workers:
        try:
            socket.create_connection((w.host, w.port), timeout=timeout).close()
        except OSError as exc:
            out.append(f"{w.endpoint} ({exc.strerror or type(exc).__name__})")
    return out


def plan_rpc(
    name: str,
    args: list[str],
    engine: Engine,
    hw: Hardware,
    workers: Callable[[], list[StoredWorker]],
    fits_locally: Callable[[list[str]], bool],
) -> RpcPlan | None:
    """The RPC plan for a configuration's ``args``: its args without the studio's ``--rpc`` value
    when it runs on this host alone; None without ``--rpc`` or with llama.cpp's own list."""
    mode, i = rpc_mode(args)
    if mode == "manual" or i < 0:
        return None
    local_args = args[:i] + args[i + 2 :]
    here = RpcPlan(local_args, hw, {}, [])  # this host alone: the studio's --rpc value removed
    if mode == "never" or (mode == "auto" and fits_locally(local_args)):
        return here
    registered = workers()
    usable = [w for w in registered if _alive(w)]
    if not usable:
        if mode == "always":
            why = "none is registered" if not registered else "none is available (`llamastudio workers ls`)"
            raise InvalidInput(f"{name}: --rpc always, but {why}")
        here.warnings.append(f"{name} does not fit this host alone and no RPC worker is available")
        return here
    check_builds(usable, engine, name)
    dead = unreachable(usable)
    if dead:
        raise StartFailed(
            f"{name}: RPC worker {', '.join(dead)} does not answer: start `llamastudio worker` there "
            "again, or remove it (`llamastudio workers rm`)",
            workers=dead,
        )
    gpus: list[Gpu] = []
    offered: dict[str, int] = {}
    weights: list[float] = []
    for w in usable:
        for dev in w.status["devices"]:
            mib = int(dev.get("offered_mib") or dev.get("free_mib") or 0)
            g = Gpu(len(gpus), f"{w.endpoint} {dev.get('name')}", mib * MiB, mib * MiB, backend="RPC")
            offered[g.device_name] = mib * MiB
            gpus.append(g)
            weights.append(float(mib))
    weights += [g.free / MiB for g in hw.gpus]
    endpoints = [w.endpoint for w in usable]
    out = [*local_args, "--rpc", ",".join(endpoints)]
    if "-ts" not in out and "--tensor-split" not in out:
        out += ["-ts", ",".join(f"{x:.0f}" for x in weights)]
    if not any(a in out for a in ("-ngl", "--gpu-layers", "--n-gpu-layers")):
        out += ["-ngl", "999"]
    hardware = replace(hw, gpus=(*gpus, *hw.gpus))
    slowest = min((w.link_mib_s for w in usable if w.link_mib_s), default=None)
    link = f"{slowest:.0f} MiB/s" if slowest else "not measured"
    reasons = [
        f"split over {len(gpus)} RPC device(s) on {', '.join(endpoints)} and {len(hw.gpus)} local GPU(s) "
        f"({'--rpc always' if mode == 'always' else 'it does not fit this host alone'})"
    ]
    warnings = [
        f"{name} runs over RPC (slowest link {link}): every token's activations cross the network "
        "between devices and loading sends the weights over it, so expect slower generation and "
        "loading than on one host; rpc-server has no authentication: keep workers on a private network"
    ]
    if slowest and slowest < SLOW_LINK_MIB_S:
        warnings.append(f"the link to a worker ({slowest:.0f} MiB/s) is slow: loading and prompts will crawl")
    return RpcPlan(out, hardware, offered, endpoints, reasons, warnings)


def check_offered(name: str, est: Estimate | None, offered: dict[str, int]) -> None:
    """Refuse a plan whose estimate puts more on a worker device than the worker offers."""
    if est is None:
        return
    over = [
        f"{d.name} needs {d.total / MiB:.0f} MiB of {offered[d.name] / MiB:.0f} MiB offered"
        for d in est.devices
        if d.name in offered and d.total > offered[d.name]
    ]
    if over:
        raise DoesNotFit(f"{name} does not fit the RPC workers: " + "; ".join(over))


def fits_here(header: GGUFModel, args: list[str], hw: Hardware) -> bool:
    """Whether ``args`` fit this host's free memory by the estimate (``--rpc auto``)."""
    try:
        est = estimate(header, parse_server_args(args), hw.gpus)
    except InvalidInput:
        return True  # let the normal plan say what is wrong
    free = {g.device_name: g.free for g in hw.gpus} | {"CPU": hw.ram_free}
    return all(d.total <= free.get(d.name, 0) for d in est.devices)


def rpc_for(
    name: str, args: list[str], engine: Engine, hw: Hardware, db: Database, header: GGUFModel
) -> RpcPlan | None:
    """``plan_rpc`` over the workers stored in ``db`` (blocking: a database read)."""
    return plan_rpc(name, args, engine, hw, lambda: load(db), lambda a: fits_here(header, a, hw))


def local_reserve(reserve: dict[str, int], plan: RpcPlan) -> dict[str, int]:
    """The reservation on this host: the workers' memory is theirs, not this host's budget."""
    return {d: n for d, n in reserve.items() if d not in plan.offered}
