"""`estimate` against the real llama-server's logged buffers (a small slice of bench/estimate_accuracy)."""

from __future__ import annotations

from pathlib import Path

from bench.estimate_accuracy import measure

SETTINGS = [
    ["-c", "4096", "-fa", "on"],
    ["-c", "2048", "-np", "3", "-fa", "off", "-ub", "256"],
    ["-c", "1024", "-np", "2", "-kvu", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"],
]


def test_exact_categories_and_compute(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    names = ["llama", "gemma3", "qwen3moe", "deepseek2", "mamba", "llama-Q4_K_M", "qwen3moe-Q4_0"]
    rows = measure({n: tiny_models[n] for n in names}, SETTINGS, tmp_path)
    compared = [r for r in rows if "refused" not in r]
    refused = [r for r in rows if "refused" in r]
    assert len(compared) >= 15
    assert all(r["agree"] for r in refused), refused  # deepseek2's 48-dim head vs q8_0 blocks
    for r in compared:
        for cat in ("model", "kv", "rs", "output"):
            err = abs(r[f"{cat}_est"] - r[f"{cat}_logged"])
            assert err <= r[f"{cat}_tol"], (r["model"], r["args"], cat, r[f"{cat}_logged"], r[f"{cat}_est"])
        logged, est = r["compute_logged"], r["compute_est"]
        assert abs(est - logged) <= max(0.15 * logged, 0.2), (r["model"], r["args"], logged, est)
