"""Every flag llama-server b11434 lists in ``--help`` (the studio's pinned llama.cpp), with how many
values it takes, and which of them can change memory without the estimator modelling them.

``ALL_FLAGS`` is generated from the rig's ``llama-server --help``: one line per help entry, its
spellings, then ``/N`` when it takes N ≠ 1 values. ``tests/test_fit_flags.py`` checks it against
the real binary, so a new pin shows what changed. Older spellings the studio still accepts
(``--no-mmap``, ``--mmap``, ``--mlock`` of builds before ``-lm``) are in ``LEGACY``.
"""

from __future__ import annotations

ALL_FLAGS = """
-h --help --usage /0
--version /0
-cl --cache-list /0
--completion-bash /0
-t --threads
-tb --threads-batch
-C --cpu-mask
-Cr --cpu-range
--cpu-strict
--prio
--poll
-Cb --cpu-mask-batch
-Crb --cpu-range-batch
--cpu-strict-batch
--prio-batch
--poll-batch
-c --ctx-size
-n --predict --n-predict
-b --batch-size
-ub --ubatch-size
--keep
--swa-full /0
-fa --flash-attn
--perf --no-perf /0
-e --escape --no-escape /0
--rope-scaling
--rope-scale
--rope-freq-base
--rope-freq-scale
--yarn-orig-ctx
--yarn-ext-factor
--yarn-attn-factor
--yarn-beta-slow
--yarn-beta-fast
-kvo --kv-offload -nkvo --no-kv-offload /0
--repack -nr --no-repack /0
--no-host /0
-ctk --cache-type-k
-ctv --cache-type-v
-dt --defrag-thold
--rpc
-lm --load-mode
-lzm --lazy-mode
--numa
-dev --device
--list-devices /0
-ot --override-tensor
-cmoe --cpu-moe /0
-ncmoe --n-cpu-moe
-ncffn --n-cpu-ffn
-ngl --gpu-layers --n-gpu-layers
-sm --split-mode
-ts --tensor-split
-mg --main-gpu
-fit --fit
-fitt --fit-target
-fitc --fit-ctx
--check-tensors /0
--override-kv
--op-offload --no-op-offload /0
--lora
--lora-scaled
--control-vector
--control-vector-scaled
--control-vector-layer-range /2
-m --model
-mu --model-url
-dr --docker-repo
-hf -hfr --hf-repo
-hff --hf-file
-hft --hf-token
--log-disable /0
--log-file
--log-jsonl --no-log-jsonl /0
--log-colors
-v --verbose --log-verbose /0
--offline /0
-lv --verbosity --log-verbosity
--log-prefix --no-log-prefix /0
--log-timestamps --no-log-timestamps /0
--spec-draft-type-k -ctkd --cache-type-k-draft
--spec-draft-type-v -ctvd --cache-type-v-draft
--samplers
-s --seed
--sampler-seq --sampling-seq
--ignore-eos /0
--temp --temperature
--top-k
--top-p
--min-p
--top-nsigma --top-n-sigma
--xtc-probability
--xtc-threshold
--typical --typical-p
--repeat-last-n
--repeat-penalty
--presence-penalty
--frequency-penalty
--dry-multiplier
--dry-base
--dry-allowed-length
--dry-penalty-last-n
--dry-sequence-breaker
--adaptive-target
--adaptive-decay
--dynatemp-range
--dynatemp-exp
--mirostat
--mirostat-lr
--mirostat-ent
-l --logit-bias
--grammar
--grammar-file
-j --json-schema
-jf --json-schema-file
-bs --backend-sampling /0
--spec-draft-hf -hfd -hfrd --hf-repo-draft
--spec-draft-threads -td --threads-draft
--spec-draft-threads-batch -tbd --threads-batch-draft
--spec-draft-cpu-mask -Cd --cpu-mask-draft
--spec-draft-cpu-range -Crd --cpu-range-draft
--spec-draft-cpu-strict --cpu-strict-draft
--spec-draft-prio --prio-draft
--spec-draft-poll --poll-draft
--spec-draft-cpu-mask-batch -Cbd --cpu-mask-batch-draft
--spec-draft-cpu-strict-batch --cpu-strict-batch-draft
--spec-draft-prio-batch --prio-batch-draft
--spec-draft-poll-batch --poll-batch-draft
--spec-draft-override-tensor -otd --override-tensor-draft
--spec-draft-cpu-moe -cmoed --cpu-moe-draft /0
--spec-draft-n-cpu-moe --spec-draft-ncmoe -ncmoed --n-cpu-moe-draft
--spec-draft-n-max
--spec-draft-n-min
--spec-synth-len
--spec-synth-rates
--spec-draft-p-split --draft-p-split
--spec-draft-p-min --draft-p-min
--spec-draft-backend-sampling --no-spec-draft-backend-sampling /0
--spec-draft-sampling
--spec-draft-device -devd --device-draft
--spec-draft-ngl -ngld --gpu-layers-draft --n-gpu-layers-draft
--spec-draft-model -md --model-draft
--spec-type
--spec-ngram-mod-n-min
--spec-ngram-mod-n-max
--spec-ngram-mod-n-match
--spec-ngram-simple-size-n
--spec-ngram-simple-size-m
--spec-ngram-simple-min-hits
--spec-ngram-map-k-size-n
--spec-ngram-map-k-size-m
--spec-ngram-map-k-min-hits
--spec-ngram-map-k4v-size-n
--spec-ngram-map-k4v-size-m
--spec-ngram-map-k4v-min-hits
--draft --draft-n --draft-max
--draft-min --draft-n-min
--spec-ngram-size-n
--spec-ngram-size-m
--spec-ngram-min-hits
-lcs --lookup-cache-static
-lcd --lookup-cache-dynamic
--kv-unified-per-slot
-ctxcp --ctx-checkpoints --swa-checkpoints
-cms --checkpoint-min-step
-cram --cache-ram
-kvu --kv-unified -no-kvu --no-kv-unified /0
--cache-idle-slots --no-cache-idle-slots /0
--context-shift --no-context-shift /0
-r --reverse-prompt
-sp --special /0
--warmup --no-warmup /0
--spm-infill /0
--pooling
-np --parallel
-cb --cont-batching -nocb --no-cont-batching /0
-mm --mmproj
-mmu --mmproj-url
--mmproj-auto --no-mmproj --no-mmproj-auto /0
--mmproj-offload --no-mmproj-offload /0
-mmdev --mmproj-device
--image-min-tokens
--image-max-tokens
--mtmd-batch-max-tokens
--video-fps
--video-timestamp-interval
--video-ffmpeg-dir
-a --alias
--tags
--embd-normalize
--host
--port
--reuse-port /0
--path
--cors-origins
--cors-methods
--cors-headers
--cors-credentials --no-cors-credentials /0
--api-prefix
--ui-config --webui-config
--ui-config-file --webui-config-file
--ui-mcp-proxy --webui-mcp-proxy --no-ui-mcp-proxy --no-webui-mcp-proxy /0
--tools
--tools-runtime
--mcp-servers-config
--mcp-servers-json
-ag --agent -no-ag --no-agent /0
--ui --webui --no-ui --no-webui /0
--embedding --embeddings /0
--rerank --reranking /0
--api-key
--api-key-file
--ssl-key-file
--ssl-cert-file
--chat-template-kwargs
-to --timeout
--sse-ping-interval
--threads-http
--cache-prompt --no-cache-prompt /0
--cache-reuse
--metrics /0
--props /0
--slots --no-slots /0
--slot-save-path
--media-path
--models-dir
--models-preset
--models-max
--models-autoload --no-models-autoload /0
--jinja --no-jinja /0
--reasoning-format
-rea --reasoning
--reasoning-effort
--reasoning-budget
--reasoning-budget-message
--reasoning-preserve --no-reasoning-preserve /0
--chat-template
--chat-template-file
--skip-chat-parsing --no-skip-chat-parsing /0
--prefill-assistant --no-prefill-assistant /0
-sps --slot-prompt-similarity
--lora-init-without-apply /0
--sleep-idle-seconds
--log-prompts-dir
--embd-gemma-default /0
--fim-qwen-1.5b-default /0
--fim-qwen-3b-default /0
--fim-qwen-7b-default /0
--fim-qwen-7b-spec /0
--fim-qwen-14b-spec /0
--fim-qwen-30b-default /0
--gpt-oss-20b-default /0
--gpt-oss-120b-default /0
--vision-gemma-4b-default /0
--vision-gemma-12b-default /0
--spec-default /0
"""
LEGACY = """
--no-mmap /0
--mmap /0
--mlock /0
-dio --direct-io /0
"""


def _table(text: str) -> tuple[dict[str, int], dict[str, str]]:
    nargs: dict[str, int] = {}
    canonical: dict[str, str] = {}
    for line in text.strip().splitlines():
        words = line.split()
        if not words:
            continue
        n = int(words.pop()[1:]) if words[-1].startswith("/") else 1
        for w in words:
            nargs[w] = n
            canonical[w] = words[0]
    return nargs, canonical


NARGS, CANONICAL = _table(ALL_FLAGS + LEGACY)

# flags that can change memory but that the estimator does not model (keyed by the first spelling
# of their help entry); every other flag of ALL_FLAGS is either modelled (``flags.py``, read by
# ``argv.py``) or has no effect on memory (threads, sampling, logging, HTTP, templates …)
_PRESET = "a preset that sets context, batch and draft flags not applied here: pass them explicitly"
NOT_MODELLED: dict[str, str] = {
    "--rpc": "weights and KV cache on RPC servers",
    "-fit": "llama.cpp's own fitting (on by default) may lower -c and -ngl where they are not set; "
    "the estimate is for the flags as given",
    "-fitt": "the margin of llama.cpp's own fitting",
    "-fitc": "the smallest context llama.cpp's own fitting may choose",
    "--override-kv": "metadata overrides can change the model's shape; estimated from the file's metadata",
    "--lora": "LoRA adapter weights (about the adapter file's size, on the layers' devices)",
    "--lora-scaled": "LoRA adapter weights (about the adapter file's size, on the layers' devices)",
    "--control-vector": "control vectors (n_embd floats per layer)",
    "--control-vector-scaled": "control vectors (n_embd floats per layer)",
    "--op-offload": "--no-op-offload changes the GPU compute buffers of a partial offload",
    "-bs": "backend sampling adds up to 12·n_vocab bytes per output row to the output buffer",
    "--spec-type": "an MTP/EAGLE/DFlash drafter's context and buffers",
    "--spec-draft-override-tensor": "the draft model's tensor overrides (its layers follow -ngld)",
    "--spec-draft-cpu-moe": "the draft model's expert placement (its layers follow -ngld)",
    "--spec-draft-n-cpu-moe": "the draft model's expert placement (its layers follow -ngld)",
    "--spec-draft-hf": "a draft model from the Hub: pass it as -md FILE to count it",
    "-mmu": "a projector from a URL: pass it as -mm FILE to count it",
    "-mmdev": "the projector is counted on the first GPU (the host with --no-mmproj-offload), "
    "not on -mmdev's device",
    "--image-min-tokens": "the projector's compute buffer is estimated for its warm-up image",
    "--image-max-tokens": "the projector's compute buffer is estimated for its warm-up image",
    "--mtmd-batch-max-tokens": "the projector's compute buffer is estimated for its warm-up image",
    "-ctxcp": "context checkpoints: copies of SWA/recurrent state per slot, made while serving",
    "-cram": "the host prompt cache, which grows with use up to this many MiB (default 8192)",
    "--cache-idle-slots": "idle slots saved into the host prompt cache (see -cram)",
    "--models-dir": "router mode (several models in one server)",
    "--models-preset": "router mode (several models in one server)",
    "--models-max": "router mode (several models in one server)",
    "-m": "the model estimated is MODEL, the command's argument",
    "-hf": "the model estimated is MODEL, the command's argument",
    "-hff": "the model estimated is MODEL, the command's argument",
    "-mu": "the model estimated is MODEL, the command's argument",
    "-dr": "the model estimated is MODEL, the command's argument",
    **dict.fromkeys(
        (
            "--embd-gemma-default",
            "--fim-qwen-1.5b-default",
            "--fim-qwen-3b-default",
            "--fim-qwen-7b-default",
            "--fim-qwen-7b-spec",
            "--fim-qwen-14b-spec",
            "--fim-qwen-30b-default",
            "--gpt-oss-20b-default",
            "--gpt-oss-120b-default",
            "--vision-gemma-4b-default",
            "--vision-gemma-12b-default",
            "--spec-default",
        ),
        _PRESET,
    ),
}
