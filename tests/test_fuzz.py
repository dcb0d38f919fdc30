"""Fuzz the header reader: mutated and truncated GGUF files only ever raise GGUFError."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamastudio.errors import GGUFError
from llamastudio.gguf import facts_from_model, load_model
from tests.malformed import CASES, valid

SEEDS = [valid(), *(data for data, _ in CASES.values() if data)]


def _check(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.gguf"
        path.write_bytes(data)
        with contextlib.suppress(GGUFError):  # anything else fails the test
            facts_from_model(load_model(str(path)))


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4096)),
)
def test_mutated_headers(seed: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    _check(bytes(data[:cut] if cut is not None else data))


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=512))
def test_random_bytes_after_magic(tail: bytes) -> None:
    _check(b"GGUF\x03\x00\x00\x00" + tail)
