"""The README stays true: quick start, every setting, every CLI command."""

from __future__ import annotations

import re
from pathlib import Path

from llamastudio.cli.main import app
from llamastudio.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quick_start_has_exactly_the_two_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert f"`LLAMASTUDIO_{name.upper()}`" in README, name
        assert field.description, f"{name} has no help text"


def test_every_cli_command_is_documented() -> None:
    names = [cmd.name or (cmd.callback.__name__ if cmd.callback else "") for cmd in app.registered_commands]
    assert names
    headings = [line for line in README.splitlines() if line.startswith("### ")]
    for name in names:
        assert any(f"`llamastudio {name} " in h or f"`llamastudio {name}`" in h for h in headings), name
    assert any("`llamastudio engines" in h for h in headings) and any(
        "`llamastudio models add" in h for h in headings
    )


def test_ci_runs_make_test() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci
