"""Issue 12 #3 (the studio's half): a configuration's llama-server flags are refused when saved or
previewed exactly where the pinned llama-server would stop at start, and ``details.engine_says``
is the line that real binary prints (checked by running it)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.fit.catalog import NARGS
from llamastudio.serving import validate
from llamastudio.serving.validate import check_server_args, check_values

REFUSED = [
    (["-c"], "-c"),
    (["-c", "512", "--temp"], "--temp"),
    (["--top-k", "x"], "--top-k"),
    (["-c", "4k"], "-c"),
    (["--temp", "warm"], "--temp"),
    (["--top-p=high"], "--top-p"),
    (["--top-k=20"], "--top-k"),
    (["-c", "512", "--alias=mine"], "--alias"),
    (["-t", "1.5"], "-t"),
    (["--ctx-checkpoints", "many"], "--ctx-checkpoints"),
]


@pytest.mark.parametrize(("args", "flag"), REFUSED)
def test_refused_with_the_flag_and_the_engines_own_line(
    args: list[str], flag: str, rig_bin: Callable[[str], Path]
) -> None:
    with pytest.raises(InvalidInput) as err:
        check_server_args(args)
    assert err.value.details["flag"] == flag
    assert err.value.message.startswith(f"{flag}: ")
    says = err.value.details["engine_says"]
    if args in (
        ["-t", "1.5"],
        ["-c", "4k"],
    ):  # std::stoi reads "1" of "1.5", "4" of "4k": the studio is stricter
        return
    done = subprocess.run([str(rig_bin("llama-server")), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    first = next(line for line in (done.stderr + done.stdout).splitlines() if line.strip())
    assert first == says, (first, says)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-c", "8192", "-np", "-1", "--temp", "0.7", "--top-p", "1e-1", "--top-k", "20"],
        ["--ctx-size=1024", "--flash-attn=on", "--parallel=2"],  # modelled: re-spelled for the engine
        ["--jinja", "--alias", "-odd-but-a-value", "-ngl", "all", "-fa", "on"],
        ["-ot", "blk\\.(1|2)\\.ffn=CPU", "--chat-template-kwargs", '{"enable_thinking": false}'],
        ["--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "32768"],
    ],
)
def test_lines_llama_server_reads_pass(args: list[str]) -> None:
    check_values(args)
    check_server_args(args)


def test_a_value_outside_a_set_names_its_flag() -> None:
    with pytest.raises(InvalidInput) as err:
        check_server_args(["-sm", "sideways"])
    assert err.value.details["flag"] == "-sm" and "none, layer, row, tensor" in err.value.message


def test_the_number_tables_only_hold_flags_of_the_pinned_help() -> None:
    assert validate._INTS and validate._FLOATS
    assert NARGS.keys() >= (validate._INTS | validate._FLOATS)
    assert not validate._INTS & validate._FLOATS
    assert all(NARGS[f] == 1 for f in validate._INTS | validate._FLOATS)
