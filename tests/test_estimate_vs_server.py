"""`estimate` against the real llama-server's logged buffers: a representative slice of
bench/estimate_accuracy (every rig architecture; several sequences, split and unified KV, small
contexts, micro-batches, flash attention on and off, quantized caches, embeddings/reranking)."""

from __future__ import annotations

from pathlib import Path

from bench.estimate_accuracy import CATEGORIES, ENCODERS, acceptance, measure

from tests.rig.factory import ARCHS

SETTINGS = [
    ["-c", "256", "-np", "4", "-fa", "on"],  # a small context split over several sequences
    ["-c", "256", "-np", "8", "-ub", "32", "-fa", "off"],
    ["-c", "2048", "-np", "3", "-ub", "128", "-fa", "off"],  # n_ubatch rounded up to 3 sequences
    ["-c", "2048", "-np", "4", "-kvu", "-ub", "64", "-fa", "on"],
    ["-c", "4096", "-np", "1", "-fa", "off"],
    ["-c", "1024", "-np", "2", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"],  # deepseek2 refuses (head 48)
    ["-c", "1024", "-np", "1", "-ctk", "q4_0", "-fa", "off"],
    ["-c", "1024", "-np", "3", "-ub", "64", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "on"],
    ["-c", "512", "-np", "2", "-ub", "128", "-fa", "on"],
    ["-c", "512", "-fa", "off"],  # llama-server's default: 4 slots, unified KV
    ["-c", "1024", "-np", "4", "-kvu", "-ub", "32", "-fa", "off"],
    ["-c", "2048", "-np", "8", "-fa", "on"],
]
ENCODER_SETTINGS = {
    "--embedding": [["-c", "512", "-fa", "on"], ["-c", "2048", "-np", "3", "-ub", "256", "-fa", "off"]],
    "--reranking": [["-c", "1024", "-np", "2", "-fa", "off"]],
}


def test_every_category_matches_the_logged_buffers(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    names = [*ARCHS, "llama-Q4_K_M", "qwen3moe-Q4_0"]
    rows = measure({n: tiny_models[n] for n in names}, SETTINGS, tmp_path)
    for name, write in ENCODERS.items():
        write(tmp_path / f"{name}.gguf")
        mode = "--reranking" if name.endswith("rerank") else "--embedding"
        settings = [[mode, *s] for s in ENCODER_SETTINGS[mode]]
        rows += measure({name: tmp_path / f"{name}.gguf"}, settings, tmp_path)
    compared = [r for r in rows if "refused" not in r]
    refused = [r for r in rows if "refused" in r]
    assert len(compared) == len(rows) - 4 >= 130
    # deepseek2's 48-wide MLA rows vs q8_0/q4_0 blocks; BERT mean pooling with 256 tokens over 3
    # sequences (llama.cpp aborts reserving the graph)
    assert {r["model"] for r in refused} == {"deepseek2", "bert-embed"}, refused
    assert all(r["agree"] for r in refused), refused
    for r in compared:
        for cat in CATEGORIES:  # compute too: the allocator replay is byte-exact on the CPU backend
            err = abs(r[f"{cat}_est"] - r[f"{cat}_logged"])
            assert err <= r[f"{cat}_tol"], (r["model"], r["args"], cat, r[f"{cat}_logged"], r[f"{cat}_est"])
    assert all(passed for _, passed, _ in acceptance(rows))
