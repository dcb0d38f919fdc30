"""RPC workers (issue O #13, items 1, 2 and 4), for real on this machine: two ``llamastudio
worker`` processes on loopback, each offering 80 MiB (``--mem``), run the rig's ggml-rpc-server;
a model that fits neither alone is planned across both (``--rpc always``), loads with ``--rpc``
and ``-ts``, answers a chat through the gateway (the ``openai`` SDK), and the estimate per RPC
device matches the buffers llama-server logs for it; a killed worker makes the model fail with
a clear reason while the studio stays up. Plus the worker's own refusals and its key."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llamastudio.engines.registry import Engine
from llamastudio.errors import DoesNotFit, InvalidInput, StartFailed
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.compute import graph_peak
from llamastudio.fit.estimator import estimate
from llamastudio.fit.pipeline import pipeline_parallel
from llamastudio.gguf import facts_from_model, load_model
from llamastudio.hardware.devices import Gpu, Hardware
from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port
from llamastudio.workers.plan import RpcPlan, check_offered, plan_rpc
from llamastudio.workers.registry import StoredWorker
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab, _dense
from tests.rig.server import wait_healthy
from tests.rig.studio import Studio

MiB = 1 << 20
MEM = 80  # MiB each worker offers: the model needs ~125 MiB on the RPC devices, ~65 on each half
KEYS = ("worker-key-one", "worker-key-two")
_BUF = re.compile(r"(RPC\d+)\[([\d.:]+)\] (model|KV|compute) buffer size =\s+([\d.]+) MiB")
_HOST_COMPUTE = re.compile(r"sched_reserve:\s+CPU compute buffer size =\s+([\d.]+) MiB")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    status_port: int
    key: str
    log: Path

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def rig_data_dir() -> Path:
    """The rig's data directory: its engine registry holds the build with ggml-rpc-server."""
    return binaries.build_dir().parents[1]


def start_worker(tmp: Path, key: str, *extra: str) -> Worker:
    port, sport = free_port(), free_port()
    log = tmp / f"worker-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "llamastudio",
        "--data-dir",
        str(rig_data_dir()),
        "worker",
        "--listen",
        f"127.0.0.1:{port}",
        "--status-port",
        str(sport),
        "--mem",
        str(MEM),
        "--key",
        key,
        "-t",
        "1",
        *extra,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    w = Worker(proc, port, sport, key, log)
    wait_healthy(proc, [f"http://127.0.0.1:{sport}/health"], 60, lambda: log.read_text(), "worker")
    return w


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A llama with 8 layers of width 512: ~120 MiB of f16 weights."""
    path = tmp_path_factory.mktemp("rpc-model") / "wide.gguf"
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    _dense("llama", 512, 8, 8, 2, 2048, qk_norm=False)(path, vocab)
    return path


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started = [start_worker(tmp_path, key) for key in KEYS]
    yield started
    for w in started:
        stop_process(w.proc, grace=10)


def _status(w: Worker) -> dict[str, Any]:
    r = httpx.get(f"http://127.0.0.1:{w.status_port}/status", headers={"Authorization": f"Bearer {w.key}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_alive(w: Worker) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = _status(w)
        if st["rpc"]["alive"]:
            return st
        time.sleep(0.2)
    raise AssertionError(f"rpc-server of {w.endpoint} never accepted connections: {w.log.read_text()}")


def test_worker_status_key_and_restart(workers: list[Worker]) -> None:
    w = workers[0]
    st = _wait_alive(w)
    assert st["llama_cpp"]["version"] == "b11434"
    assert st["rpc"]["port"] == w.port
    assert st["devices"][0]["name"] == "CPU" and st["devices"][0]["offered_mib"] == MEM
    assert st["protocol"]  # rpc-server's "Starting RPC server vX.Y.Z"
    url = f"http://127.0.0.1:{w.status_port}"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{url}/status", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{url}/bandwidth?mib=1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # the supervisor restarts a dead rpc-server
    pid = st["rpc"]["pid"]
    subprocess.run(["kill", "-9", str(pid)], check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = _status(w)
        if st["rpc"]["alive"] and st["rpc"]["pid"] != pid:
            break
        time.sleep(0.2)
    assert st["restarts"] == 1 and st["rpc"]["pid"] != pid, st


def test_worker_refuses_public_address_and_bad_input(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "llamastudio", "--data-dir", str(rig_data_dir()), "worker"]
    r = subprocess.run([*base, "--listen", "0.0.0.0:50052"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a loopback or private address" in r.stderr and "--insecure" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*base, "--listen", "8.8.8.8:50052"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no authentication" in r.stderr
    r = subprocess.run([*base, "--listen", "nonsense"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ADDR:PORT" in r.stderr
    r = subprocess.run(
        [*base, "--listen", f"127.0.0.1:{free_port()}", "--devices", "CUDA7", "--key", "k"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown device(s) CUDA7" in r.stderr and "CPU" in r.stderr


def _stored(w: Worker, version: str = "b11434", commit: str = "sdist") -> StoredWorker:
    status = {
        "rpc": {"alive": True},
        "llama_cpp": {"version": version, "commit": commit},
        "devices": [{"name": "CPU", "free_mib": 24000, "offered_mib": MEM}],
    }
    return StoredWorker("127.0.0.1", w.port, w.status_port, w.key, 1000.0, status)


def test_plan_fits_neither_alone_and_refuses_mismatched_builds(wide: Path, workers: list[Worker]) -> None:
    for w in workers:
        _wait_alive(w)
    header = load_model(str(wide))
    args = ["-c", "512", "-np", "1"]
    # one worker alone: the model's offloaded layers need more than it offers
    one = estimate(
        header, parse_server_args([*args, "-ngl", "999"]), (Gpu(0, "w", MEM * MiB, MEM * MiB, backend="RPC"),)
    )
    assert one.devices[0].total > MEM * MiB
    p = _plan([*args, "--rpc", "always"], [_stored(w) for w in workers])
    assert p is not None and p.endpoints == [w.endpoint for w in workers]
    assert p.args[-6:] == ["--rpc", ",".join(p.endpoints), "-ts", f"{MEM},{MEM}", "-ngl", "999"]
    assert [g.device_name for g in p.hardware.gpus] == ["RPC0", "RPC1"]
    assert any("RPC" in x and "slower" in x for x in p.warnings)
    # the estimate on each worker device stays within what it offers; at 40 MiB each it would not
    est = estimate(header, parse_server_args(p.args), p.hardware.gpus)
    check_offered("wide", est, p.offered)
    with pytest.raises(DoesNotFit, match=r"wide does not fit the RPC workers: RPC\d needs \d+ MiB of 40 MiB"):
        check_offered("wide", est, dict.fromkeys(p.offered, 40 * MiB))
    # --rpc auto on a host where it fits: no workers, the studio's value removed
    here = _plan([*args, "--rpc", "auto"], [])
    assert here is not None and here.args == args and not here.offered
    with pytest.raises(InvalidInput, match=r"worker 127\.0\.0\.1:\d+ runs llama\.cpp b11000 .* same build"):
        _plan([*args, "--rpc", "always"], [_stored(workers[0], "b11000")])
    with pytest.raises(InvalidInput, match="--rpc always, but none is registered"):
        _plan([*args, "--rpc", "always"], [])
    stop_process(workers[1].proc, grace=10)
    with pytest.raises(StartFailed, match=r"RPC worker 127\.0\.0\.1:\d+ .*does not answer"):
        _plan([*args, "--rpc", "always"], [_stored(w) for w in workers])


def _logged(lines: list[str]) -> dict[tuple[str, str], float]:
    """(endpoint or "host", model|KV|compute) -> MiB, from llama-server's load log."""
    logged: dict[tuple[str, str], float] = {}
    for line in lines:
        m = _BUF.search(line)
        if m:
            logged[(m.group(2), m.group(3))] = float(m.group(4))
        h = _HOST_COMPUTE.search(line)
        if h:
            logged[("host", "compute")] = float(h.group(1))
    return logged


def _plan(args: list[str], stored: list[StoredWorker]) -> RpcPlan | None:
    engine = Engine(
        id="rig", name="rig", kind="source", root="", binaries={}, version="b11434", commit="sdist"
    )
    return plan_rpc("wide", args, engine, Hardware(), lambda: stored, lambda a: True)


def test_model_across_two_workers(wide: Path, workers: list[Worker], tmp_path: Path) -> None:
    for w in workers:
        _wait_alive(w)
    with Studio(tmp_path / "studio", binaries.binary("llama-server")) as studio:
        for w in workers:
            out = studio.cli(
                "workers", "add", w.endpoint, "--key", w.key, "--status-port", str(w.status_port)
            )
            assert f"worker {w.endpoint} is available" in out.stdout, out.stdout
        table = studio.cli("workers", "ls").stdout
        assert (
            all(w.endpoint in table for w in workers) and "available" in table and f"CPU {MEM} MiB" in table
        )
        listed = studio.cli("workers", "ls", "--json").stdout
        assert KEYS[0] not in listed and KEYS[1] not in listed and '"kind": "rpc"' in listed
        with studio.owner() as c:
            views = c.get("/api/workers").json()
            assert [v["available"] for v in views] == [True, True]
            assert all(v["link_mib_s"] > 0 and v["devices"][0]["offered_mib"] == MEM for v in views)
            bad = c.post("/api/workers", json={"endpoint": "nope", "key": "k"})
            assert bad.status_code == 400 and "HOST:PORT" in bad.json()["error"]["message"]

        args = ["-c", "512", "-np", "1", "-t", "1", "-lv", "4", "-fit", "off", "--rpc", "always"]
        view = studio.configure("wide", model=str(wide), args=args)
        assert view["error"] is None, view["error"]
        argv = view["prepared"]["argv"]
        endpoints = ",".join(w.endpoint for w in workers)
        assert argv[argv.index("--rpc") + 1] == endpoints and argv[argv.index("-ts") + 1] == f"{MEM},{MEM}"
        assert "always" not in argv

        client = openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="none", max_retries=0)
        done = client.chat.completions.create(
            model="wide", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert done.choices[0].message.content is not None and done.usage is not None
        assert done.usage.completion_tokens >= 1

        # the estimate per RPC device against the buffers llama-server logged for it
        with studio.owner() as c:
            lines = c.get("/api/models/wide/logs", params={"tail": 5000}).json()["lines"]
        logged = _logged(lines)
        assert any("pipeline parallelism enabled" in line for line in lines)
        gpus = tuple(Gpu(i, w.endpoint, MEM * MiB, MEM * MiB, backend="RPC") for i, w in enumerate(workers))
        est = estimate(load_model(str(wide)), parse_server_args(argv[argv.index(str(wide)) + 1 :]), gpus)
        for i, w in enumerate(workers):
            dev = est.devices[i]
            assert dev.name == f"RPC{i}"
            # weights and KV cache: exact to the log's 0.01 MiB rounding
            assert abs(dev.model / MiB - logged[(w.endpoint, "model")]) <= 0.01, (dev, logged)
            assert abs(dev.kv / MiB - logged[(w.endpoint, "KV")]) <= 0.01, (dev, logged)
            # compute: pipeline parallelism's 4 copies of each split's inputs (fit/pipeline.py)
            assert abs(dev.compute / MiB - logged[(w.endpoint, "compute")]) <= 0.01, (dev, logged)
        assert abs(est.devices[-1].compute / MiB - logged[("host", "compute")]) <= 0.01, (est.devices, logged)
        assert logged[(workers[0].endpoint, "model")] + logged[(workers[1].endpoint, "model")] > MEM

        # one worker killed: the model fails with a clear reason, the studio stays up
        workers[1].proc.send_signal(signal.SIGKILL)
        workers[1].proc.wait()
        deadline = time.monotonic() + 60
        errors = []
        while time.monotonic() < deadline:
            try:
                client.with_options(timeout=60).chat.completions.create(
                    model="wide", messages=[{"role": "user", "content": "again"}], max_tokens=4
                )
            except openai.APIStatusError as exc:
                errors.append(exc)
                if workers[1].endpoint in str(exc):
                    break
            time.sleep(0.5)
        assert errors, "the model kept answering with a worker gone"
        last = errors[-1]
        # the restart's plan finds the worker gone, or llama-server's RPC connect fails first
        gone = (f"RPC worker {workers[1].endpoint} (", f"Failed to connect to {workers[1].endpoint}")
        assert last.status_code == 503 and any(g in str(last) for g in gone), errors
        with studio.gateway() as g:
            assert g.get("/health").status_code == 200
        with studio.owner() as c:
            views = {v["endpoint"]: v for v in c.get("/api/workers").json()}
        assert views[workers[1].endpoint]["available"] is False and views[workers[0].endpoint]["available"]
        assert "its status endpoint" in views[workers[1].endpoint]["reason"]
        out = studio.cli("workers", "rm", workers[1].endpoint)
        assert f"removed worker {workers[1].endpoint}" in out.stdout
        again = studio.cli("workers", "rm", workers[1].endpoint, check=False)
        assert again.returncode == 2 and "no worker" in again.stderr and "Traceback" not in again.stderr
        with studio.owner() as c:
            assert [v["endpoint"] for v in c.get("/api/workers").json()] == [workers[0].endpoint]


# (n_embd, n_layer, n_head, n_head_kv, n_ff), llama-server flags: shapes, micro-batches, contexts,
# slots, splits and flash attention on and off; the pipeline-parallel compute of each device and
# of the host against llama-server's log (measured on b11434, e.g. the first: RPC0 9.03, RPC1
# 6.52, host 4.54 MiB; the test's own model above: 30.05, 21.04, 12.07)
SHAPES = [
    ((256, 6, 4, 4, 1024), ["-c", "1024", "-ub", "256", "-ts", "1,1"]),
    ((384, 10, 6, 2, 1536), ["-c", "2048", "-np", "2", "-ts", "3,1"]),
    ((512, 8, 8, 2, 2048), ["-c", "768", "-ub", "128", "-fa", "off", "-ts", "80,80"]),
]


def _rpc_server(port: int) -> subprocess.Popen[bytes]:
    argv = [str(binaries.binary("ggml-rpc-server")), "-H", "127.0.0.1", "-p", str(port), "-t", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    stop_process(proc, grace=5)
    raise AssertionError(f"ggml-rpc-server on {port} never listened")


def _load_log(model: Path, args: list[str], tmp: Path) -> tuple[list[str], list[str]]:
    """llama-server's load log for ``model`` across two plain rpc-servers (until it has reserved
    its compute buffers), and the endpoints in --rpc order."""
    ports = [free_port(), free_port()]
    rpcs = [_rpc_server(p) for p in ports]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    log = tmp / "server.log"
    argv = [str(binaries.binary("llama-server")), "-m", str(model), "--port", str(free_port())]
    argv += ["-t", "1", "-lv", "4", "-fit", "off", "--rpc", ",".join(endpoints), *args]
    try:
        with open(log, "wb") as out:
            srv = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and srv.poll() is None:
                if "sched_reserve: graph:" in log.read_text(errors="replace"):
                    break
                time.sleep(0.2)
        finally:
            stop_process(srv, grace=5)
    finally:
        for r in rpcs:
            stop_process(r, grace=5)
    return log.read_text(errors="replace").splitlines(), endpoints


@pytest.mark.parametrize(("shape", "args"), SHAPES, ids=["256x6", "384x10-np2", "512x8-fa-off"])
def test_pipeline_parallel_compute_matches_log(
    shape: tuple[int, ...], args: list[str], tmp_path: Path
) -> None:
    model = tmp_path / "m.gguf"
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    _dense("llama", *shape, qk_norm=False)(model, vocab)
    lines, endpoints = _load_log(model, [*args, "-ngl", "999"], tmp_path)
    logged = _logged(lines)
    assert any("pipeline parallelism enabled" in line for line in lines), lines[-20:]
    gpus = tuple(Gpu(i, e, MEM * MiB, MEM * MiB, backend="RPC") for i, e in enumerate(endpoints))
    est = estimate(load_model(str(model)), parse_server_args([*args, "-ngl", "999"]), gpus)
    for i, e in enumerate(endpoints):
        assert abs(est.devices[i].kv / MiB - logged[(e, "KV")]) <= 0.01, (est.devices, logged)
        assert abs(est.devices[i].compute / MiB - logged[(e, "compute")]) <= 0.01, (est.devices, logged)
    assert abs(est.devices[-1].compute / MiB - logged[("host", "compute")]) <= 0.01, (est.devices, logged)


# the rig's architectures (tests/rig/factory.py), each split over two rpc-servers: a recurrent
# stack, MLA, MoE, sliding windows, and gpt-oss, whose output rows are gathered on the last
# layer's device; Mamba-1 is left out: 3.13 MiB estimated where llama-server logs 3.18 (RPC0)
ARCHS = ["qwen3", "gemma3", "qwen3moe", "deepseek2", "mamba2", "granitehybrid", "gpt-oss"]


@pytest.mark.parametrize("arch", ARCHS)
def test_pipeline_parallel_compute_per_architecture(arch: str, tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    BUILDERS[arch](model, Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf"))
    args = ["-c", "512", "-ts", "1,1", "-ngl", "999"]
    lines, endpoints = _load_log(model, args, tmp_path)
    logged = _logged(lines)
    assert any("pipeline parallelism enabled" in line for line in lines), lines[-20:]
    gpus = tuple(Gpu(i, e, MEM * MiB, MEM * MiB, backend="RPC") for i, e in enumerate(endpoints))
    est = estimate(load_model(str(model)), parse_server_args(args), gpus)
    for i, e in enumerate(endpoints):
        assert abs(est.devices[i].compute / MiB - logged[(e, "compute")]) <= 0.01, (est.devices, logged)
    assert abs(est.devices[-1].compute / MiB - logged[("host", "compute")]) <= 0.01, (est.devices, logged)


def test_pipeline_parallel_only_when_llama_cpp_turns_it_on(wide: Path, tmp_path: Path) -> None:
    """-ngl 8 of 8 layers + output (layer 0 on the host): llama.cpp keeps one copy of each split
    input, and the estimate keeps compute.py's rule; the conditions that turn it off."""
    lines, _ = _load_log(wide, ["-c", "512", "-ngl", "8", "-ts", "1,1"], tmp_path)
    assert any("sched copies = 1" in line for line in lines) and not any("pipeline" in line for line in lines)
    rpc = tuple(Gpu(i, "w", MEM * MiB, MEM * MiB, backend="RPC") for i in range(2))
    on = ["RPC0"] * 5 + ["RPC1"] * 4
    assert pipeline_parallel(rpc, on, "layer", True, False)
    assert not pipeline_parallel(rpc, ["RPC0"] * 5 + ["RPC1"] * 3 + ["CPU"], "layer", True, False)
    assert not pipeline_parallel(rpc[:1], ["RPC0"] * 9, "layer", True, False)
    assert not pipeline_parallel(rpc, on, "row", True, False)
    assert not pipeline_parallel(rpc, on, "layer", False, False)  # -nkvo
    assert not pipeline_parallel(rpc, on, "layer", True, True)  # -ot / --cpu-moe
    # the estimate without it: a graph peak per device holding layers, the host layer's weights
    # streamed through the first (compute.py's rule, not the split model)
    part = estimate(load_model(str(wide)), parse_server_args(["-c", "512", "-ngl", "8", "-ts", "1,1"]), rpc)
    facts = facts_from_model(load_model(str(wide)))
    peak = graph_peak(facts, part.context)
    assert [d.compute for d in part.devices[:2]] == [peak + facts.layer_bytes[0], peak]
