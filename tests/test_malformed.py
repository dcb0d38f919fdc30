"""Every class of malformed GGUF gets one clear line on stderr and exit code 2, fast and small."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from llamastudio.errors import GGUFError
from llamastudio.gguf import facts_from_model, load_model
from tests.malformed import CASES, valid


def test_minimal_valid_file_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(valid())
    model = load_model(str(path))
    assert [t.name for t in model.tensors] == ["output_norm.weight"]
    assert facts_from_model(model).block_count == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_rejects_in_bounded_memory_and_time(tmp_path: Path, case: str) -> None:
    data, message = CASES[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(GGUFError, match=message):
        load_model(str(path))
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{case}: peak {peak} bytes"
    assert elapsed < 2.0


@pytest.mark.parametrize(
    "case",
    [
        "wrong magic",
        "string length 2^60",
        "2^40 tensors",
        "array of 2^50 elements",
        "unknown value type",
        "tensor offset past end",
        "truncated header",
    ],
)
def test_cli_one_line_exit_2(tmp_path: Path, case: str) -> None:
    data, message = CASES[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    out = subprocess.run(
        [sys.executable, "-m", "llamastudio", "inspect", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in out.stderr


def test_cli_missing_file_and_directory(tmp_path: Path) -> None:
    for target, message in ((tmp_path / "nope.gguf", "no such file"), (tmp_path, "directory")):
        out = subprocess.run(
            [sys.executable, "-m", "llamastudio", "inspect", str(target)], capture_output=True, text=True
        )
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
