"""Build the web UI when its inputs changed; print nothing when it is up to date.

- ``node_modules`` lives outside the checkout, in ``~/.cache/llamastudio/web/<hash of
  package.json + package-lock.json>/``, and ``web/node_modules`` is a symlink to it: a second
  checkout, or a later run, installs nothing.
- The API client's types are generated from the studio's own OpenAPI spec (``build/openapi.json``
  → ``web/src/api/schema.d.ts``) with openapi-typescript.
- ``npm run build`` (vue-tsc type check + vite) writes ``src/llamastudio/web/dist``; a stamp with
  the hash of every input skips it next time.

    python scripts/build_web.py [--test]     # --test also runs the vitest suite
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
DIST = ROOT / "src" / "llamastudio" / "web" / "dist"
CACHE = Path(os.environ.get("LLAMASTUDIO_CACHE", Path.home() / ".cache" / "llamastudio")) / "web"
OPENAPI = ROOT / "build" / "openapi.json"


def run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed (exit {done.returncode}) in {cwd}")


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def node_modules() -> None:
    key = digest([WEB / "package.json", WEB / "package-lock.json"])
    target = CACHE / key
    if not (target / "node_modules" / ".package-lock.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(WEB / name, target / name)
        print(f"installing web dependencies into {target} (once per package-lock)", file=sys.stderr)
        # `npm install`, not `npm ci`: npm 10+ writes lockfiles without other platforms' optional
        # packages and then refuses them in `ci` (npm/cli#4828); the lock still pins every version
        run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], target)
    link = WEB / "node_modules"
    if link.is_symlink() and link.resolve() == (target / "node_modules").resolve():
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(target / "node_modules")


def openapi() -> None:
    """The studio's OpenAPI spec, from the app itself (no server needed)."""
    sys.path.insert(0, str(ROOT / "src"))
    from llamastudio.api.app import create_app
    from llamastudio.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(Settings(data_dir=Path(tmp))).openapi()
    text = json.dumps(spec, indent=1, sort_keys=True)
    OPENAPI.parent.mkdir(exist_ok=True)
    if not OPENAPI.exists() or OPENAPI.read_text() != text:
        OPENAPI.write_text(text)
    schema = WEB / "src" / "api" / "schema.d.ts"
    if not schema.exists() or schema.stat().st_mtime < OPENAPI.stat().st_mtime:
        run(["npx", "--no-install", "openapi-typescript", str(OPENAPI), "-o", str(schema), "--silent"], WEB)


def sources() -> list[Path]:
    skip = {"node_modules"}
    out = [p for p in WEB.rglob("*") if p.is_file() and not skip & set(p.relative_to(WEB).parts)]
    return [*out, OPENAPI]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test", action="store_true", help="also run vitest")
    args = ap.parse_args()
    if shutil.which("npm") is None:
        sys.exit("error: npm (Node.js ≥ 18) is needed to build the web UI: apt-get install nodejs npm")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:  # two builds at once would clobber dist/
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build(args.test)


def build(test: bool) -> int:
    node_modules()
    openapi()
    key = digest(sources())
    stamp = DIST / ".stamp"
    if not (stamp.exists() and stamp.read_text() == key and (DIST / "index.html").exists()):
        print("building the web UI", file=sys.stderr)
        run(["npm", "run", "--silent", "build"], WEB)
        stamp.write_text(key)
    if test:
        run(["npx", "--no-install", "vitest", "run"], WEB)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
