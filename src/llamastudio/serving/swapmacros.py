"""llama-swap's macros: ``${name}`` substitutions in a config's strings.

- ``macros`` at the top and in each model: names (``[A-Za-z0-9_-]``, under 64 characters, not
  ``PORT``/``MODEL_ID``/``PID``) to scalar values; a model's own override the global ones.
- A macro may use other macros; they bind late, in the model's scope (a global
  ``default_args: --ctx-size ${default_ctx}`` takes the model's own ``default_ctx``). A cycle and
  an unknown name are errors naming the macro; so is a value past ``MAX_CMD`` characters.
- ``${env.VAR}``: the variable from the environment the config is read with; unset is an error
  naming it. An API caller without the command permission reads none (``NoEnvironment``).
- ``${MODEL_ID}``: the model's id. ``${PORT}`` stays for the runtime (chosen at each start), and
  ``${PID}`` for ``cmdStop``.
- A string that is one macro and nothing else (``port: ${temp}`` in ``metadata``) takes the
  macro's own type (a number stays a number), as llama-swap does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from llamastudio.errors import CommandsNotAllowed, InvalidInput
from llamastudio.serving.fields import kind

MAX_CMD = 128 << 10  # characters of one expanded string (Linux refuses longer arguments anyway)
MAX_TOTAL = 32 << 20  # characters all the expansions of one document may produce
RUNTIME = frozenset({"PORT", "PID"})  # left for the runtime to fill
RESERVED = RUNTIME | {"MODEL_ID"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")
_REF = re.compile(r"\$\{([^}]{0,200})\}")
Scalar = str | int | float | bool


class NoEnvironment(Mapping[str, str]):
    """The environment of an import whose caller may not read the studio's (an API caller
    without the command permission): any ``${env.X}`` is a 403 naming it, never its value —
    it would show the studio's own secrets (tokens, keys) back in ``/v1/models``."""

    def _refuse(self, var: object) -> CommandsNotAllowed:
        return CommandsNotAllowed(
            f"${{env.{str(var)[:60]}}}: reading the studio's environment is off for the API; enable "
            "it with LLAMASTUDIO_ALLOW_COMMANDS=1, or use the CLI or serve --config on the studio's machine"
        )

    def __contains__(self, var: object) -> bool:
        raise self._refuse(var)

    def __getitem__(self, var: str) -> str:
        raise self._refuse(var)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def read_macros(value: object, where: str) -> dict[str, Scalar]:
    """A ``macros`` mapping, each name and value checked (absent or null: none)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: `macros` must be a mapping (got {kind(value)})", field="macros")
    out: dict[str, Scalar] = {}
    for key, val in value.items():
        name = str(key)
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise InvalidInput(
                f"{where}: macro name {name[:60]!r} must be 1-63 letters, digits, _ or -", field="macros"
            )
        if key in RESERVED:
            raise InvalidInput(f"{where}: macro name {key!r} is reserved", field="macros")
        if isinstance(val, list | dict) or val is None:
            raise InvalidInput(
                f"{where}: macro {key!r} must be a string, number or true/false (got {kind(val)})",
                field=f"macros.{key}",
            )
        if isinstance(val, str) and "\0" in val:
            raise InvalidInput(f"{where}: macro {key!r} must not contain NUL bytes", field=f"macros.{key}")
        out[key] = val
    return out


MAX_NODES = 10_000  # values in one metadata or setParams tree


def check_nodes(value: Any, where: str) -> None:
    """Refuse a tree of more than ``MAX_NODES`` values (anchors are shared by the loader, so
    walking one would cost what its expansion costs: the count stops at the limit)."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise InvalidInput(f"{where}: more than {MAX_NODES} values")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class Scope:
    """The macros one model sees: the global ones, its own over them, ``MODEL_ID`` and ``env``."""

    def __init__(
        self, macros: Mapping[str, Scalar], env: Mapping[str, str], model_id: str | None, where: str
    ) -> None:
        self.macros = macros
        self.env = env
        self.model_id = model_id
        self.where = where
        self._done: dict[str, str] = {}
        self._spent = [0]  # characters produced, shared by the whole document's scopes

    def child(self, own: Mapping[str, Scalar], model_id: str, where: str) -> Scope:
        scope = Scope({**self.macros, **own}, self.env, model_id, where)
        scope._spent = self._spent
        return scope

    def _value(self, name: str, stack: tuple[str, ...]) -> str | None:
        """The text ``${name}`` stands for (None: left as it is for the runtime)."""
        if name in RUNTIME:
            return None
        if name == "MODEL_ID":
            if self.model_id is None:
                raise InvalidInput(f"{self.where}: ${{MODEL_ID}} is only known inside a model")
            return self.model_id
        if name.startswith("env."):
            var = name[4:]
            if var not in self.env:
                raise InvalidInput(
                    f"{self.where}: environment variable {var!r} (used as ${{env.{var}}}) is not set",
                    field=f"env.{var}",
                )
            return self.env[var]
        if name in self._done:
            return self._done[name]
        if name not in self.macros:
            raise InvalidInput(f"{self.where}: unknown macro ${{{name[:60]}}}", field=f"macros.{name[:60]}")
        if name in stack:
            cycle = " → ".join([*stack[stack.index(name) :], name])
            raise InvalidInput(
                f"{self.where}: macros refer to each other in a cycle: {cycle}", field="macros"
            )
        if len(stack) > 64:
            raise InvalidInput(f"{self.where}: macros nested more than 64 deep", field="macros")
        raw = self.macros[name]
        text = self._expand(_text(raw), (*stack, name)) if isinstance(raw, str) else _text(raw)
        self._done[name] = text
        return text

    def _expand(self, text: str, stack: tuple[str, ...] = ()) -> str:
        out: list[str] = []
        size = 0
        pos = 0
        for m in _REF.finditer(text):
            value = self._value(m.group(1), stack)
            piece = text[pos : m.start()] + (m.group(0) if value is None else value)
            size += len(piece)
            if size > MAX_CMD:
                raise InvalidInput(f"{self.where}: longer than {MAX_CMD} characters with its macros")
            out.append(piece)
            pos = m.end()
        out.append(text[pos:])
        size += len(text) - pos
        if size > MAX_CMD:
            raise InvalidInput(f"{self.where}: longer than {MAX_CMD} characters with its macros")
        self._spent[0] += size
        if self._spent[0] > MAX_TOTAL:
            raise InvalidInput(f"macros expand to more than {MAX_TOTAL >> 20} MiB in all")
        return "".join(out)

    def text(self, text: str, field: str | None = None) -> str:
        """``text`` with every macro replaced (``${PORT}``, ``${PID}`` kept); an error that names
        no field names ``field`` (and the model)."""
        try:
            return self._expand(text)
        except InvalidInput as exc:
            if field is not None and "field" not in exc.details:
                exc.details["field"] = field
                if self.model_id is not None:
                    exc.details.setdefault("model", self.model_id)
            raise

    def value(self, value: Any, depth: int = 0) -> Any:
        """A ``metadata`` value: macros in every string, a whole-string macro keeping its type
        (at most ``MAX_NODES`` values: YAML anchors can make a small text a huge tree)."""
        if depth == 0:
            check_nodes(value, self.where + ": metadata")
        if depth > 32:
            raise InvalidInput(f"{self.where}: metadata nested more than 32 deep")
        if isinstance(value, str):
            m = _REF.fullmatch(value)
            if m and m.group(1) in self.macros and not isinstance(self.macros[m.group(1)], str):
                return self.macros[m.group(1)]
            return self._expand(value)
        if isinstance(value, list):
            return [self.value(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): self.value(v, depth + 1) for k, v in value.items()}
        return value
