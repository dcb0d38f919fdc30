"""One-model mode (issue 16, J.3): ``MODEL`` / ``MODEL_PATH`` and the seeds' settings make the real
``llamastudio serve`` download, choose, configure, load and pin one model at start, against the
local Hub server and the rig's llama-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from llamastudio.config import Settings
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model
from llamastudio.hardware.devices import Hardware
from llamastudio.services.onefit import check_fit
from tests.rig.hub import HubServer, Repo, hub_server
from tests.rig.studio import Studio

REPO = "tiny/llama-GGUF"
QUANTS = {"F16": "llama", "Q8_0": "llama-Q8_0", "Q4_K_M": "llama-Q4_K_M"}


@pytest.fixture
def hub(tiny_models: dict[str, Path]) -> Iterator[HubServer]:
    with hub_server() as srv:
        files = {f"tiny-llama-{q}.gguf": tiny_models[m] for q, m in QUANTS.items()}
        srv.add_repo(Repo(REPO, files))
        yield srv


def one_model(tmp_path: Path, rig_bin: Callable[[str], Path], hub: HubServer, **env: str) -> Studio:
    """A studio in one-model mode against the local Hub; info lines logged (the test reads them)."""
    base = {"HF_ENDPOINT": hub.url, "LLAMASTUDIO_LOG_LEVEL": "info", "LLAMASTUDIO_HARDWARE": "cpu"}
    return Studio(tmp_path / "s", rig_bin("llama-server"), env={**base, **env}, timeout=180)


def watch_health(url: str, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    """Every distinct (status, phase) ``/health`` answers, in order, until ``stop``."""
    while not stop.is_set():
        try:
            r = httpx.get(url, timeout=2)
            entry = (r.status_code, r.json().get("phase", ""))
            if not seen or seen[-1] != entry:
                seen.append(entry)
        except (httpx.HTTPError, ValueError):
            pass
        stop.wait(0.05)


def test_model_with_quant_is_downloaded_loaded_and_pinned_before_any_request(
    tmp_path: Path, rig_bin: Callable[[str], Path], hub: HubServer
) -> None:
    hub.throttle = 0.02  # a download slow enough to see /health say so
    spec = f"{REPO}:Q8_0"
    studio = one_model(tmp_path, rig_bin, hub, MODEL=spec, CTX_SIZE="4096", MAX_TOKENS="5", PARALLEL="1")
    seen: list[tuple[int, str]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_health, args=(f"{studio.gateway_url}/health", stop, seen))
    watcher.start()
    try:
        studio.start()  # returns once the gateway's /health says 200
    except BaseException:
        studio.stop()
        raise
    finally:
        stop.set()
        watcher.join()
    try:
        # 503 while downloading and loading, 200 only once loaded
        assert (503, "downloading") in seen, seen  # ("loading" may last less than a poll)
        assert {phase for status, phase in seen if status == 503} <= {"resolving", "downloading", "loading"}
        assert seen[-1] == (200, "ready"), seen
        assert [s for s, _ in seen].index(200) == len(seen) - 1
        log = studio.log()
        assert f"one-model: downloading {spec}: tiny-llama-Q8_0.gguf" in log
        assert f"one-model: {spec} is loaded and ready" in log
        assert "one-model: loading " in log  # the load's stages, as plain lines
        # loaded and pinned before any request, with the seeds' settings as its flags
        status = studio.status(spec)
        assert status["state"] == "ready"
        with studio.api() as api:
            cfg = api.get(f"/api/models/{spec}/config").json()["config"]
        assert cfg["pinned"] is True and cfg["model"] == spec
        args = cfg["args"]
        assert args[args.index("-c") + 1] == "4096" and args[args.index("-np") + 1] == "1"
        assert args[args.index("-n") + 1] == "5"
        assert not [p for p in hub.requests if "F16" in p], dict(hub.requests)  # only the quant asked for
        # MAX_TOKENS is the default of a request that sets none, not a cap
        client = OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="none")
        messages = [{"role": "user", "content": "Hello"}]
        r = client.chat.completions.create(model=spec, messages=messages, extra_body={"ignore_eos": True})  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.completion_tokens == 5
        r = client.chat.completions.create(
            model=spec,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=9,
            extra_body={"ignore_eos": True},
        )
        assert r.usage is not None and r.usage.completion_tokens == 9
        # the seeds' one PORT: the UI + API port answers the OpenAI API and /health too
        on_port = OpenAI(base_url=f"{studio.api_url}/v1", api_key="none")
        assert [m.id for m in on_port.models.list().data] == [spec]
        r = on_port.chat.completions.create(model=spec, messages=messages, max_tokens=2)  # type: ignore[arg-type]
        assert r.choices[0].message is not None
        # seed 003's example names the model "any": the one model answers whatever name is sent
        r = on_port.chat.completions.create(model="any", messages=messages, max_tokens=2)  # type: ignore[arg-type]
        assert r.usage is not None and r.usage.completion_tokens >= 1
        assert httpx.get(f"{studio.api_url}/health").json() == {
            "status": "ok",
            "phase": "ready",
            "model": spec,
        }
        assert '<div id="app"' in httpx.get(f"{studio.api_url}/").text  # the UI still answers there
    finally:
        studio.stop()
    # started again: the file is in the cache, nothing is downloaded, the Hub is not asked
    hub.reset_counts()
    with studio:
        assert studio.status(spec)["state"] == "ready"
        assert f"one-model: {spec} is in the Hugging Face cache" in studio.log()
    assert sum(hub.requests.values()) == 0, dict(hub.requests)


def test_a_download_cut_by_a_kill_is_resumed_not_repeated(
    tmp_path: Path, rig_bin: Callable[[str], Path], hub: HubServer, tiny_models: dict[str, Path]
) -> None:
    hub.throttle = 0.05
    spec = f"{REPO}:Q8_0"
    studio = one_model(tmp_path, rig_bin, hub, MODEL=spec, CTX_SIZE="2048")
    seen: list[tuple[int, str]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_health, args=(f"{studio.gateway_url}/health", stop, seen))
    watcher.start()
    errors: list[RuntimeError] = []

    def start() -> None:
        try:
            studio.start()
        except RuntimeError as exc:  # killed below, before it was ready
            errors.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    file = f"{REPO}/tiny-llama-Q8_0.gguf"
    size = tiny_models["llama-Q8_0"].stat().st_size
    try:
        deadline = time.monotonic() + 60
        while hub.bytes_sent[file] < size // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (503, "downloading") in seen and hub.bytes_sent[file] < size, seen
    finally:
        studio.kill()  # kill -9 mid-download: the job and the partial file stay
        stop.set()
        watcher.join()
        starting.join()
    assert errors, "the studio was ready before it was killed"
    sent = hub.bytes_sent[file]
    hub.throttle = 0.0
    with studio:
        assert studio.status(spec)["state"] == "ready"
        # resumed at start by the job system; found running, or finished meanwhile
        assert "the download a previous start left" in studio.log()
    assert hub.bytes_sent[file] < size + sent // 2  # continued where it stopped, not started over


def _needs(model: Path, ctx: int) -> int:
    """Bytes of RAM the studio's fit check says ``model`` needs at ``ctx`` on a CPU."""
    hw = Hardware((), 2, 1 << 40, 1 << 40)
    fit = check_fit(load_model(str(model)), hw, Settings(ctx_size=ctx, parallel=1))
    return fit.estimate.host.total


def test_repo_alone_picks_the_largest_quant_that_fits_and_says_why(
    tmp_path: Path, rig_bin: Callable[[str], Path], hub: HubServer, tiny_models: dict[str, Path]
) -> None:
    f16, q8 = _needs(tiny_models["llama"], 4096), _needs(tiny_models["llama-Q8_0"], 4096)
    assert q8 < f16
    profile = tmp_path / "ram.json"  # room for Q8_0, not for F16
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + (q8 + f16) // 2}))
    studio = one_model(
        tmp_path,
        rig_bin,
        hub,
        MODEL=REPO,
        CONTEXT_SIZE="4096",
        PARALLEL="1",
        LLAMASTUDIO_HARDWARE=str(profile),
    )
    with studio:
        log = studio.log()
        assert f"one-model: {REPO}:F16 (" in log and "does not fit" in log
        assert f"one-model: chose {REPO}:Q8_0, the largest quant that fits fully in RAM" in log
        assert studio.status(REPO)["state"] == "ready"
        with studio.api() as api:
            assert api.get(f"/api/models/{REPO}/config").json()["config"]["model"] == f"{REPO}:Q8_0"
        with studio.gateway() as gw:  # the one model answers a request that names none
            r = gw.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            )
        assert r.status_code == 200, r.text


def test_a_model_that_cannot_fit_exits_non_zero_with_the_estimate(
    tmp_path: Path, rig_bin: Callable[[str], Path], hub: HubServer, tiny_models: dict[str, Path]
) -> None:
    q8 = _needs(tiny_models["llama-Q8_0"], 4096)
    profile = tmp_path / "small.json"
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + q8 // 2}))
    env = {
        **os.environ,
        "LLAMASTUDIO_DATA_DIR": str(tmp_path / "data"),
        "LLAMASTUDIO_LLAMA_SERVER": str(rig_bin("llama-server")),
        "LLAMASTUDIO_HARDWARE": str(profile),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.url,
        "MODEL": f"{REPO}:Q8_0",
        "CTX_SIZE": "4096",
        "PARALLEL": "1",
    }
    argv = [sys.executable, "-m", "llamastudio", "serve", "--port", "0", "--gateway-port", "0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert errors[0].startswith(f"error: MODEL={REPO}:Q8_0 cannot be served on this machine:")
    assert "does not fit at context 4096: it needs about" in errors[0] and " MiB" in errors[0]
    assert not (tmp_path / "hf" / "hub" / "models--tiny--llama-GGUF" / "blobs").exists()  # nothing downloaded
    # org/repo alone, as the flag (it wins over MODEL): no quant fits, the smallest one's estimate is given
    done = subprocess.run(
        [*argv, "--model", REPO], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    assert (
        f"error: MODEL={REPO} cannot be served on this machine: no quant fits; the smallest, Q4_K_M"
        in done.stderr
    )


def test_model_path_with_the_vision_seeds_names(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    env = {
        "MODEL_PATH": str(tiny_models["qwen3"]),
        "CONTEXT_SIZE": "2048",
        "N_GPU_LAYERS": "99",
        "BATCH_SIZE": "256",
        "UBATCH_SIZE": "128",
        "LLAMASTUDIO_LOG_LEVEL": "info",
        "LLAMASTUDIO_HARDWARE": "cpu",
    }
    with Studio(tmp_path / "s", rig_bin("llama-server"), env=env, timeout=120) as studio:
        assert studio.status("qwen3")["state"] == "ready"
        with studio.api() as api:
            args = api.get("/api/models/qwen3/config").json()["config"]["args"]
            argv = api.get("/api/models/qwen3/command").json()["argv"]  # what runs
        assert argv[argv.index("-ub") + 1] == "128" and argv[argv.index("-c") + 1] == "2048"
        assert args[args.index("-c") + 1] == "2048" and args[args.index("-ngl") + 1] == "99"
        assert args[args.index("-b") + 1] == "256" and args[args.index("-ub") + 1] == "128"
        client = OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="none")
        r = client.chat.completions.create(
            model="qwen3", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert r.choices[0].finish_reason in ("length", "stop")


def test_one_model_mode_without_an_engine_says_how_to_get_one(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMASTUDIO_LLAMA_SERVER", "LLAMA_SERVER_PATH")}
    env |= {
        "LLAMASTUDIO_DATA_DIR": str(tmp_path / "data"),
        "MODEL_PATH": str(tiny_models["llama"]),
        "LLAMASTUDIO_HARDWARE": "cpu",
        "PATH": "/usr/bin:/bin",  # no lmdeploy, no llama-server
    }
    argv = [sys.executable, "-m", "llamastudio", "serve", "--port", "0", "--gateway-port", "0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no llama.cpp engine is registered yet" in done.stderr  # the first start's hint
    assert "llamastudio engines install" in done.stderr and "llamastudio engines build" in done.stderr
    assert "error: one-model mode needs a llama.cpp engine and none is registered" in done.stderr
    assert "Traceback" not in done.stderr
