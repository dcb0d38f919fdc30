"""The CLI talks to the studio that serves its data directory (issue 14, item 7).

Regression: ``serve --port N`` with a data directory, then ``ps`` with that data directory listed
*another* studio's models (the one answering on the default port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from llamastudio.runtime.process import free_port
from tests.rig.studio import Studio


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLAMASTUDIO_")}
    argv = [sys.executable, "-m", "llamastudio", "--data-dir", str(data_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, env={**base, **env}, timeout=120)


def test_cli_finds_its_studio_and_refuses_another_data_dirs(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    studio = Studio(tmp_path / "a", rig_bin("llama-server"))
    with studio:
        record = json.loads((studio.data_dir / "run" / "studio.json").read_text())
        assert record["url"] == studio.api_url and record["pid"] == studio.proc.pid  # type: ignore[union-attr]
        key = studio.data_dir / "run" / "owner.key"
        assert key.stat().st_mode & 0o777 == 0o600

        # no port given: found through run/studio.json
        done = cli(
            studio.data_dir, "models", "config", "m1", "--model", str(tiny_models["llama"]), "--", "-c", "512"
        )
        assert done.returncode == 0, done.stderr
        assert "-c 512" in done.stdout
        assert studio.status("m1")["name"] == "m1"  # stored by the running studio, seen at once
        ps = cli(studio.data_dir, "ps", "--json")
        assert ps.returncode == 0 and json.loads(ps.stdout) == []

        # another data directory, the default port pointed at this studio: refused, with the reason
        other = tmp_path / "b"
        wrong = cli(other, "ps", LLAMASTUDIO_PORT=str(studio.port))
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
        assert str(studio.data_dir) in wrong.stderr and "not" in wrong.stderr
        # ... unless the user names that studio
        named = cli(other, "ps", "--json", LLAMASTUDIO_URL=studio.api_url)
        assert named.returncode == 0, named.stderr

        # a second studio on the same data directory refuses to start
        second = cli(studio.data_dir, "serve", "--port", str(free_port()), "--gateway-port", str(free_port()))
        assert second.returncode != 0 and "already serves" in second.stderr

        # exported through the studio, imported back through it
        exported = cli(studio.data_dir, "models", "export")
        assert exported.returncode == 0 and "m1" in exported.stdout
    assert not (studio.data_dir / "run" / "studio.json").exists()  # removed at exit
    assert not key.exists()

    # no studio: the CLI edits the data directory itself; ps says none runs
    idle = cli(studio.data_dir, "models", "unconfig", "m1")
    assert idle.returncode == 0, idle.stderr
    none = cli(studio.data_dir, "ps", LLAMASTUDIO_PORT=str(free_port()))
    assert none.returncode != 0 and "no studio serves" in none.stderr
