"""Tiny real embedding, reranker and speculative-decoding models for the tests.

Like ``factory.py``: ``gguf.GGUFWriter``, deterministic random weights, the tensor set the pinned
llama.cpp loader creates (``src/models/bert.cpp``, ``src/models/qwen3.cpp``, ``llama.cpp``) and
the metadata its converter writes (``conversion/bert.py``, ``conversion/qwen.py``):

- ``write_embedding``: BERT (bge-style) with the WordPiece vocab shipped in the source tree
  (``models/ggml-vocab-bert-bge.gguf``), non-causal, ``bert.pooling_type`` = MEAN, no chat template.
- ``write_reranker``: the same BERT with the sequence-classification head (``cls.*`` tensors,
  ``bert.classifier.output_labels``) and ``bert.pooling_type`` = RANK.
- ``write_qwen3_embedding`` / ``write_qwen3_reranker``: the decoder-based Qwen3-Embedding (pooling
  LAST, causal, a chat template) and Qwen3-Reranker (pooling RANK, ``cls.output`` = the lm_head's
  "yes"/"no" rows, labels ["yes", "no"], a ``rerank`` chat template) on the llama SPM vocab.
- ``write_draft_pair``: a llama main model and a smaller llama draft with the same vocab. The draft
  shares the main model's embedding/output tensors and first layer, so with these small random
  weights it predicts mostly what the main model does and drafts get accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from llamastudio.gguf import load_model
from tests.rig import binaries
from tests.rig.factory import CHATML, Vocab, _attention, _ffn, _Model

# What a real bge-small / Qwen3 conversion writes (convert_hf_to_gguf.py + gguf.SpecialVocab).
BGE_VOCAB = "ggml-vocab-bert-bge.gguf"
LLAMA_VOCAB = "ggml-vocab-llama-spm.gguf"
QWEN3_RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer "
    "the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)

# Sizes: BERT n_embd 64 (4 heads of 16), 2 layers, n_ff 128, 512 positions (bge's n_ctx_train).
BERT_EMBD, BERT_LAYERS, BERT_HEADS, BERT_FF, BERT_CTX = 64, 2, 4, 128, 512


@dataclass(frozen=True)
class WpmVocab:
    """A BERT WordPiece vocab (no scores); the special ids are the ones bge's tokenizer names."""

    tokens: list[str]
    types: list[int]
    pre: str
    token_type_count: int
    unk: int
    sep: int
    pad: int
    cls: int
    mask: int

    @classmethod
    def from_gguf(cls, path: Path) -> WpmVocab:
        meta = load_model(str(path)).metadata
        return cls(
            meta["tokenizer.ggml.tokens"],
            meta["tokenizer.ggml.token_type"],
            meta["tokenizer.ggml.pre"],
            meta["tokenizer.ggml.token_type_count"],
            meta["tokenizer.ggml.unknown_token_id"],
            meta["tokenizer.ggml.seperator_token_id"],
            meta["tokenizer.ggml.padding_token_id"],
            meta["tokenizer.ggml.cls_token_id"],
            meta["tokenizer.ggml.mask_token_id"],
        )


@functools.cache
def bert_vocab() -> WpmVocab:
    return WpmVocab.from_gguf(binaries.source_dir() / "models" / BGE_VOCAB)


@functools.cache
def llama_vocab() -> Vocab:
    return Vocab.from_gguf(binaries.source_dir() / "models" / LLAMA_VOCAB)


def _writer(path: Path, arch: str, name: str) -> gguf.GGUFWriter:
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_basename(name)
    w.add_size_label("tiny")
    w.add_license("mit")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    return w


def _bert_vocab_kv(w: gguf.GGUFWriter, v: WpmVocab) -> None:
    """BertModel.set_vocab + SpecialVocab: [CLS] is BOS, [SEP] is EOS, both added; no add_sep."""
    w.add_token_type_count(v.token_type_count)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre(v.pre)
    w.add_token_list(v.tokens)
    w.add_token_types(v.types)
    w.add_bos_token_id(v.cls)
    w.add_eos_token_id(v.sep)
    w.add_unk_token_id(v.unk)
    w.add_sep_token_id(v.sep)
    w.add_pad_token_id(v.pad)
    w.add_uint32("tokenizer.ggml.cls_token_id", v.cls)  # gguf-py 0.19 has no add_cls_token_id
    w.add_mask_token_id(v.mask)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(False)


def _bert(path: Path, vocab: WpmVocab | None, name: str, pooling: int | None, head: bool, seed: int) -> None:
    v = vocab or bert_vocab()
    e, ff = BERT_EMBD, BERT_FF
    m = _Model("bert", e, Vocab([], [], [], 0, 0, 0), seed)
    m.mat("token_embd.weight", e, len(v.tokens))
    # token_types is added to f32 activations (ggml_add has no f32+f16 on CPU): the converter keeps it f32
    m.mat("token_types.weight", e, v.token_type_count, f32=True)
    m.mat("position_embd.weight", e, BERT_CTX)
    m.vec("token_embd_norm.weight", e)
    m.vec("token_embd_norm.bias", e, value=0.0)
    for i in range(BERT_LAYERS):
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            m.mat(f"blk.{i}.{t}.weight", e, e)
            m.vec(f"blk.{i}.{t}.bias", e, value=None)
        m.vec(f"blk.{i}.attn_output_norm.weight", e)
        m.vec(f"blk.{i}.attn_output_norm.bias", e, value=0.0)
        m.mat(f"blk.{i}.ffn_up.weight", e, ff)
        m.vec(f"blk.{i}.ffn_up.bias", ff, value=None)
        m.mat(f"blk.{i}.ffn_down.weight", ff, e)
        m.vec(f"blk.{i}.ffn_down.bias", e, value=None)
        m.vec(f"blk.{i}.layer_output_norm.weight", e)
        m.vec(f"blk.{i}.layer_output_norm.bias", e, value=0.0)
    if head:
        # RobertaClassificationHead: classifier.dense -> cls, classifier.out_proj -> cls.output
        m.mat("cls.weight", e, e)
        m.vec("cls.bias", e, value=None)
        m.mat("cls.output.weight", e, 1)
        m.vec("cls.output.bias", 1, value=None)

    w = _writer(path, "bert", name)
    w.add_context_length(BERT_CTX)
    w.add_embedding_length(e)
    w.add_feed_forward_length(ff)
    w.add_block_count(BERT_LAYERS)
    w.add_head_count(BERT_HEADS)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if pooling is not None:
        w.add_pooling_type(gguf.PoolingType(pooling))
    if head:
        # one label: a real cross-encoder's id2label {0: "LABEL_0"} is kept by the converter
        w.add_classifier_output_labels(["LABEL_0"])
    _bert_vocab_kv(w, v)
    m.finish(w)


def write_embedding(path: Path, vocab: WpmVocab | None = None) -> None:
    """A bge-style BERT sentence embedder: non-causal, mean pooling, n_embd 64, no chat template."""
    _bert(path, vocab, "tiny-bge-embed", int(gguf.PoolingType.MEAN), head=False, seed=11)


def write_reranker(
    path: Path, vocab: WpmVocab | None = None, pooling: int | None = int(gguf.PoolingType.RANK)
) -> None:
    """A BERT cross-encoder: ``cls``/``cls.output`` head, one output label, pooling RANK.

    ``pooling=None`` writes no ``bert.pooling_type``, as the converter does for a BERT/XLM-R
    ``*ForSequenceClassification`` checkpoint without a sentence-transformers ``modules.json``
    (bge-reranker): only ``--reranking`` then selects RANK.
    """
    _bert(path, vocab, "tiny-bge-reranker", pooling, head=True, seed=12)


# --- decoder-based (Qwen3) embedding and reranker ---------------------------------------------

QWEN3_EMBD, QWEN3_LAYERS, QWEN3_HEADS, QWEN3_HEADS_KV, QWEN3_FF = 128, 2, 4, 2, 256


def _qwen3(
    path: Path,
    vocab: Vocab,
    name: str,
    seed: int,
    configure: Callable[[gguf.GGUFWriter], None],
    tied: bool,
    cls_rows: list[int],
) -> None:
    e, hd = QWEN3_EMBD, QWEN3_EMBD // QWEN3_HEADS
    m = _Model("qwen3", e, vocab, seed)
    m.embed_and_output(tied=tied)
    if cls_rows:
        # conversion/qwen.py: cls.output = the lm_head rows of the label tokens, [yes, no]
        out = dict(m.tensors)["token_embd.weight" if tied else "output.weight"]
        m.tensors.append(("cls.output.weight", np.ascontiguousarray(out[cls_rows])))
    for i in range(QWEN3_LAYERS):
        _attention(m, i, QWEN3_HEADS, QWEN3_HEADS_KV, hd, qk_norm=True)
        _ffn(m, i, QWEN3_FF)
    w = _writer(path, "qwen3", name)
    w.add_context_length(4096)
    w.add_embedding_length(e)
    w.add_block_count(QWEN3_LAYERS)
    w.add_feed_forward_length(QWEN3_FF)
    w.add_head_count(QWEN3_HEADS)
    w.add_head_count_kv(QWEN3_HEADS_KV)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    configure(w)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab.tokens)
    w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    w.add_bos_token_id(vocab.bos)
    w.add_eos_token_id(vocab.eos)
    w.add_unk_token_id(vocab.unk)
    w.add_add_bos_token(True)
    m.finish(w)


def write_qwen3_embedding(path: Path, vocab: Vocab | None = None) -> None:
    """Qwen3-Embedding style: causal decoder, ``qwen3.pooling_type`` = LAST, tied output, a chat template."""

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_pooling_type(gguf.PoolingType.LAST)
        w.add_chat_template(CHATML)

    _qwen3(path, vocab or llama_vocab(), "tiny-qwen3-embed", 13, cfg, tied=True, cls_rows=[])


def write_qwen3_reranker(path: Path, vocab: Vocab | None = None) -> None:
    """Qwen3-Reranker style: causal, pooling RANK, ``cls.output`` [n_embd, 2], a ``rerank`` template."""
    v = vocab or llama_vocab()
    yes, no = v.tokens.index("▁yes"), v.tokens.index("▁no")

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_pooling_type(gguf.PoolingType.RANK)
        w.add_classifier_output_labels(["yes", "no"])
        w.add_chat_template([{"name": "rerank", "template": QWEN3_RERANK_TEMPLATE}])
        w.add_chat_template(CHATML)

    _qwen3(path, v, "tiny-qwen3-reranker", 14, cfg, tied=False, cls_rows=[yes, no])


# --- speculative decoding ---------------------------------------------------------------------

# main: llama n_embd 256, 4 layers; draft: the same n_embd/vocab, 1 layer, so its weights and KV
# are smaller. Same seed and tensor order, so token_embd/output/output_norm and layer 0 are
# identical; the blocks' output projections are scaled down (LAYER_SCALE) so each model's next
# token is mostly decided by the shared embedding/output and the draft's guesses are often taken.
MAIN = {"n_layer": 4, "n_head": 8, "n_head_kv": 2, "n_ff": 512}
DRAFT = {"n_layer": 1, "n_head": 8, "n_head_kv": 2, "n_ff": 512}
LLAMA_EMBD = 256
LAYER_SCALE = 0.05


def _llama(
    path: Path, vocab: Vocab, scale: float, n_layer: int, n_head: int, n_head_kv: int, n_ff: int
) -> None:
    m = _Model("llama", LLAMA_EMBD, vocab, seed=21)
    head_dim = LLAMA_EMBD // n_head
    m.embed_and_output()
    for i in range(n_layer):
        _attention(m, i, n_head, n_head_kv, head_dim, qk_norm=False)
        _ffn(m, i, n_ff)
    m.tensors = [
        (n, (d * scale).astype(d.dtype) if n.endswith(("attn_output.weight", "ffn_down.weight")) else d)
        for n, d in m.tensors
    ]

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(10000.0)

    m.write(path, cfg)


def write_draft_pair(
    directory: Path, vocab: Vocab | None = None, scale: float = LAYER_SCALE
) -> tuple[Path, Path]:
    """(main, draft) GGUFs in ``directory``, for ``llama-server -m main -md draft --spec-type draft-simple``.

    b11434 loads ``-md`` without ``--spec-type draft-simple`` but never drafts with it.
    """
    v = vocab or llama_vocab()
    directory.mkdir(parents=True, exist_ok=True)
    main, draft = directory / "main.gguf", directory / "draft.gguf"
    _llama(main, v, scale, **MAIN)
    _llama(draft, v, scale, **DRAFT)
    return main, draft
