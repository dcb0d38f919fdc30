"""A tiny real model whose chat template supports tools, for tool-call tests.

``factory.py``'s models carry a ChatML template that mentions no tools: llama-server (b11434,
Jinja on by default) reports ``supports_tools: false`` for it and builds no tool-call grammar,
so ``tool_choice: "required"`` yields plain text. This one is a Qwen3 (the factory's tensor set)
with what a real Qwen2.5-Instruct conversion writes: the Qwen2 byte-level BPE vocab shipped in
the source tree (``models/ggml-vocab-qwen2.gguf``; ``<|im_start|>`` is one token there, and
``<tool_call>`` / ``</tool_call>`` are added at Qwen2.5's ids) and the real Qwen2.5 template
(``models/templates/Qwen-Qwen2.5-7B-Instruct.jinja``: tools in the system prompt, calls as
``<tool_call>{json}</tool_call>``).

The SPM vocab of ``factory.py`` will not do with such a template: llama-server primes the
tool-call grammar with the tokens of the generation prompt (``<|im_start|>assistant\\n``), skips a
first token whose piece starts with a space, and SPM's first token is ``" <"`` — the grammar then
meets ``|`` where it wants ``<`` and the request fails ("Failed to initialize samplers").
"""

from __future__ import annotations

from pathlib import Path

import gguf

from llamastudio.gguf import load_model
from tests.rig import binaries
from tests.rig.factory import Vocab, _attention, _ffn, _Model

QWEN2_VOCAB = "ggml-vocab-qwen2.gguf"
QWEN25_TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"
IM_END = "<|im_end|>"
TOOL_CALL = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
NEWLINE = "\u010a"  # byte-level BPE spelling of "\n"
# Logits (for any input but <tool_call>) of the steered tokens, 4 apart: with the default min_p
# (0.05) the best one the grammar allows is the only candidate; the rest of the vocab is ~0.
LADDER = {
    IM_END: 48.0,
    TOOL_CALL: 40.0,
    '{"': 36.0,  # opens the call and its arguments without a run of whitespace first
    '"': 32.0,
    TOOL_CALL_END: 30.0,
    "}": 28.0,
    ",": 24.0,
    ":": 20.0,
    "1": 16.0,
}
# Qwen2.5's added tokens that its template writes (not special: USER_DEFINED in its conversion)
QWEN25_ADDED = {151657: TOOL_CALL, 151658: TOOL_CALL_END}
ENDOFTEXT = "<|endoftext|>"
# Small: the vocab is 151,936 tokens, so embedding + output dominate: 2 x 151936 x 64 x f16 = 37 MiB.
N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF = 64, 2, 4, 2, 128


def template() -> str:
    return (binaries.source_dir() / "models" / "templates" / QWEN25_TEMPLATE).read_text()


def steer(m: _Model, tokens: list[str]) -> None:
    """Weights that make a forced tool call start at once, stay short, and end the reply.

    The tool-call grammar of this llama.cpp lets prose come first (and takes ``<tool_call>`` not
    followed by a newline as prose), so random weights alone write text until ``max_tokens``.
    Here the residual stream carries clean signals that the 0.02-scale layers barely move:
    dimension 1 is 1.0 in every token's embedding, dimension 2 only in ``<tool_call>``'s,
    dimension 3 only in ``"``'s. The output norm keeps just those, and the output matrix reads
    them as ``LADDER`` (after ``<tool_call>``: a newline above all; after ``"``: ``"`` again).
    The grammar allows a subset of the vocab at each step; the highest rung it allows wins, and
    where it allows none, the pick is random among what it allows. So a forced call opens with
    ``<tool_call>`` + newline (the end token is not allowed yet), its JSON is compact (``{"``,
    ``"``, ``:``, ``,``, ``}`` where valid; a free string closes at once, ``""``; an integer is
    ``1``; enum values and names are spelled out by the grammar), ``</tool_call>`` closes it and
    ``<|im_end|>`` ends the reply. With no call forced the reply is empty."""
    t = dict(m.tensors)
    embd, norm, out = t["token_embd.weight"], t["output_norm.weight"], t["output.weight"]
    embd[:, 1] = 1.0
    embd[:, 2:4] = 0.0
    embd[tokens.index(TOOL_CALL), 2] = 1.0
    embd[tokens.index('"'), 3] = 1.0
    norm[:] = 0.0
    norm[1:4] = 1.0
    for token, logit in LADDER.items():
        out[tokens.index(token), 1] = logit / 8  # ĥ1 ~ 8: one of 64 dimensions holds the rms
    out[tokens.index(NEWLINE), 2] = 8.0  # ~45 after <tool_call> (ĥ1 = ĥ2 ~ 5.7 there)
    out[tokens.index('"'), 3] = 3.0  # ~40 after a quote: a free string closes at once ("")


def write_tool_model(path: Path) -> None:
    """A Qwen2.5-style instruct model (random weights, ``steer``-ed) whose template declares tools."""
    meta = load_model(str(binaries.source_dir() / "models" / QWEN2_VOCAB)).metadata
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta["tokenizer.ggml.token_type"])
    for token_id, token in QWEN25_ADDED.items():  # the shipped Qwen2 vocab has padding there
        tokens[token_id] = token
        types[token_id] = gguf.TokenType.USER_DEFINED
    vocab = Vocab(tokens, [], types, 0, 0, 0)
    m = _Model("qwen3", N_EMBD, vocab, seed=7)
    m.embed_and_output()
    steer(m, tokens)
    head_dim = N_EMBD // N_HEAD
    for i in range(N_LAYER):
        _attention(m, i, N_HEAD, N_HEAD_KV, head_dim, qk_norm=True)
        _ffn(m, i, N_FF)

    w = gguf.GGUFWriter(path, "qwen3")
    w.add_name("tiny-qwen3-tools")
    w.add_basename("tiny-qwen3-tools")
    w.add_size_label("tiny")
    w.add_license("mit")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(4096)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(1_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    # what convert_hf_to_gguf.py writes for Qwen2.5-Instruct (gpt2 BPE, eos = <|im_end|>, no BOS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(meta["tokenizer.ggml.merges"])
    w.add_eos_token_id(tokens.index(IM_END))
    w.add_pad_token_id(tokens.index(ENDOFTEXT))
    w.add_bos_token_id(tokens.index(ENDOFTEXT))
    w.add_add_bos_token(False)
    w.add_chat_template(template())
    m.finish(w)
