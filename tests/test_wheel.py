"""Install without a checkout (issue 16, J.5): the wheel carries the built UI, and installed into a
fresh virtual environment it gives a working ``llamastudio serve`` that serves the UI and, with no
engine registered, says how to get one.

The wheel is built from a copy of the sources (``pip wheel``: the build backend in pyproject.toml,
in pip's isolated build environment). The fresh environment reuses this one's installed
dependencies through a ``.pth`` line to a directory of links that leaves out the studio itself,
so ``pip install`` resolves every requirement without downloading anything, and the studio
imported is the wheel's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx

from llamastudio.runtime.process import free_port
from tests.rig.server import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "src" / "llamastudio" / "web" / "dist"


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, (
        f"{argv[:4]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done  # type: ignore[no-any-return]


def _assets(index_html: str) -> list[str]:
    """The files the UI's index.html loads (``/assets/…``)."""
    return sorted(set(re.findall(r'(?:src|href)="/(assets/[^"]+)"', index_html)))


def test_the_wheel_serves_the_ui_from_a_fresh_venv(tmp_path: Path) -> None:
    assert (DIST / "index.html").is_file(), "the UI is not built: run `make web` first"
    # 1. the wheel, from a copy of what a source distribution holds
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("llamastudio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    ui = src / "src" / "llamastudio" / "web" / "dist"  # the copy: the checkout's may be rebuilt meanwhile
    index = (ui / "index.html").read_text()
    assert "llamastudio/web/dist/index.html" in names
    assert _assets(index) and all(f"llamastudio/web/dist/{a}" in names for a in _assets(index))
    assert "llamastudio/web/dist/docs-assets/swagger-ui-bundle.js" in names  # /docs works offline
    assert any(n.startswith("llamastudio/store/migrations/versions/") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    # 2. a fresh venv: this environment's dependencies visible, the studio not
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    deps = tmp_path / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if entry.name.startswith(("llamastudio", "__editable__", "__pycache__")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    (site / "_deps.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", str(wheel)])
    where = _run([str(python), "-c", "import llamastudio; print(llamastudio.__file__)"]).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout's
    assert _run([str(venv / "bin" / "llamastudio"), "--version"]).stdout.strip() == "llamastudio 0.1.0"

    # 3. its `serve`: the UI, and (no engine yet) how to get one
    port, gateway = free_port(), free_port()
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",  # no llama-server, no lmdeploy
        "LLAMASTUDIO_DATA_DIR": str(tmp_path / "data"),
        "LLAMASTUDIO_LMDEPLOY_PORT": "-1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    argv = [str(venv / "bin" / "llamastudio"), "serve", "--port", str(port), "--gateway-port", str(gateway)]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(
            proc, [f"{url}/api/status", f"http://127.0.0.1:{gateway}/health"], 60, log_path.read_text, "serve"
        )
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and '<div id="app">' in page.text
        for asset in _assets(page.text):
            r = httpx.get(f"{url}/{asset}")
            assert r.status_code == 200 and r.content == (ui / asset).read_bytes(), asset
        status = httpx.get(f"{url}/api/status").json()
        assert status["version"] == "0.1.0" and status["data_dir"] == str(tmp_path / "data")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "no llama.cpp engine is registered yet" in text, text
    assert "llamastudio engines install" in text and "llamastudio engines build" in text
    assert proc.returncode == 0 or proc.returncode == -signal.SIGTERM, text
    assert os.path.exists(tmp_path / "data" / "studio.db")
