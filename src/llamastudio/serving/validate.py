"""A configuration's llama-server flags checked as the pinned llama-server reads them, so that what
would stop the engine at start is refused when the configuration is saved or previewed (API, CLI
and UI alike), with the engine's own wording in ``details.engine_says``.

What the engine checks at start and this module checks first:

- a flag of its ``--help`` without its value(s) — ``error while handling argument "-c": expected
  value for argument``;
- a number it reads with ``std::stoi`` / ``std::stof`` that is not one — ``error while handling
  argument "--top-k": stoi``;
- ``--flag=value`` for a flag passed through as given (llama-server reads only ``--flag value``;
  the flags the studio models are re-spelled) — ``error: invalid argument: --top-k=20``;
- a value outside a fixed set (``-fa``, ``-ctk``, ``-sm`` …: ``fit/argv.py``), refused with the
  studio's message (the engine's wording differs per flag), the flag in ``details.flag``.

A flag the engine does not list at all is refused per engine by ``engines/command.check_flags``
(llama-server: ``error: invalid argument: --bogus-flag``): that needs the engine's ``--help``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.catalog import NARGS
from llamastudio.fit.flags import ServerFlags


def _words(text: str) -> list[str]:
    return text.split()


# flags whose handler in llama.cpp b11434's common/arg.cpp takes an ``int value`` (parsed with
# std::stoi) or converts its string with std::stof; only those llama-server lists are kept
_INTS = NARGS.keys() & _words(
    """-t --threads -tb --threads-batch -c --ctx-size --kv-unified-per-slot -n --predict
    --n-predict -b --batch-size -ub --ubatch-size --keep -ctxcp --ctx-checkpoints
    --swa-checkpoints -cms --checkpoint-min-step -cram --cache-ram --top-k --repeat-last-n
    --dry-allowed-length --dry-penalty-last-n --mirostat --yarn-orig-ctx -gan --grp-attn-n -gaw
    --grp-attn-w -np --parallel --image-min-tokens --image-max-tokens --mtmd-batch-max-tokens
    -ncmoe --n-cpu-moe -ncffn --n-cpu-ffn -mg --main-gpu -fitc --fit-ctx -to --timeout
    --sse-ping-interval --threads-http --cache-reuse --models-max --reasoning-budget
    --sleep-idle-seconds -lv --verbosity --log-verbosity --spec-draft-threads -td
    --threads-draft --spec-draft-threads-batch -tbd --threads-batch-draft --spec-draft-n-cpu-moe
    --spec-draft-ncmoe -ncmoed --n-cpu-moe-draft --spec-draft-n-max --spec-draft-n-min"""
)
_FLOATS = NARGS.keys() & _words(
    """--temp --temperature --top-p --min-p --top-nsigma --top-n-sigma --xtc-probability
    --xtc-threshold --typical --typical-p --repeat-penalty --presence-penalty
    --frequency-penalty --dry-multiplier --dry-base --adaptive-target --adaptive-decay
    --dynatemp-range --dynatemp-exp --mirostat-lr --mirostat-ent --rope-scale --rope-freq-base
    --rope-freq-scale --yarn-ext-factor --yarn-attn-factor --yarn-beta-slow --yarn-beta-fast
    -sps --slot-prompt-similarity --spec-draft-p-split --draft-p-split --spec-draft-p-min
    --draft-p-min"""
)
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PREFIXED = re.compile(r"^(-{1,2}[A-Za-z][\w.-]*): ")


def engine_says(flag: str, problem: str) -> str:
    """llama-server's own line for a flag it cannot read (common/arg.cpp)."""
    return f'error while handling argument "{flag}": {problem}'


def _refuse(flag: str, message: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{flag}: {message}", flag=flag, engine_says=engine_says(flag, problem))


def check_values(args: list[str]) -> None:
    """Refuse a flag of the pinned ``--help`` missing its value(s), or a number that is not one
    (the first problem, in order). Tokens that are not such flags are left to ``check_flags``."""
    i = 0
    while i < len(args):
        token = args[i]
        flag, eq, _ = token.partition("=") if token.startswith("--") else (token, "", "")
        n = NARGS.get(flag, 0)
        if n == 0 or eq:  # --flag=value: a modelled flag's is read by parse_server_args, any other's refused
            i += 1
            continue
        values = args[i + 1 : i + 1 + n]
        if len(values) < n:
            want = "a value" if n == 1 else f"{n} values"
            raise _refuse(flag, f"missing value (it takes {want})", "expected value for argument")
        value = values[0]
        if flag in _INTS and not _INT.match(value.strip()):
            raise _refuse(flag, f"expected a whole number, got {value!r}", "stoi")
        if flag in _FLOATS and not _FLOAT.match(value.strip()):
            raise _refuse(flag, f"expected a number, got {value!r}", "stof")
        i += 1 + n


def check_server_args(args: list[str]) -> ServerFlags:
    """``args`` read as the estimator reads them (``parse_server_args``), after ``check_values``;
    a refusal names its flag in ``details.flag``."""
    check_values(args)
    try:
        flags = parse_server_args(args)
    except InvalidInput as exc:
        m = _PREFIXED.match(exc.message)
        if m is None or "flag" in exc.details:
            raise
        raise InvalidInput(exc.message, **exc.details, flag=m.group(1)) from exc
    check_no_inline(flags.extra)
    return flags


def check_no_inline(extra: Sequence[str]) -> None:
    """Refuse ``--flag=value`` among the flags passed to llama-server as given: b11434 reads no
    such form (``error: invalid argument: --top-k=20``). The flags the studio models are read in
    either form and re-spelled, so only the pass-through ones (``extra``) are checked."""
    i = 0
    while i < len(extra):
        token = extra[i]
        flag, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if eq and flag in NARGS:
            raise InvalidInput(
                f"{flag}: llama-server reads no {flag}=VALUE: write {flag} {value}",
                flag=flag,
                engine_says=f"error: invalid argument: {token}",
            )
        i += 1 + (0 if eq else NARGS.get(flag, 0))
