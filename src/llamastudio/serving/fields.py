"""Typed reads of untrusted import documents (llama-swap YAML, the JSON comment of a preset).

Every value is checked for its type and range as it is read; a wrong one is an ``InvalidInput``
(400) naming the model and the field (``details: {"model", "field"}``), never a ``ValueError``,
``AttributeError`` or ``RecursionError`` from deep inside. Messages name the type found, never
quote the value (an alias bomb's value is exponentially long when printed).

Parsing is bounded too: the text's size (``MAX_TEXT``), YAML/JSON nesting depth (``MAX_DEPTH``,
checked while composing, before Python's recursion limit is near). YAML anchors are shared, not
copied, by the loader, and every reader below looks only at the shapes it expects, so an anchor
bomb costs what its text costs.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

from llamastudio.errors import InvalidInput

MAX_TEXT = 4 << 20  # characters of one import document
MAX_DEPTH = 64
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def kind(value: object) -> str:
    """The type of a value, in words (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _check_size(text: str, what: str) -> None:
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{what} is larger than {MAX_TEXT >> 20} MiB")


class _DepthLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than ``MAX_DEPTH`` (its composer recurses)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise InvalidInput(f"YAML nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    _check_size(text, "the YAML")
    loader = _DepthLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise InvalidInput(f"not valid YAML: {exc}") from exc
    except RecursionError as exc:  # belt and braces: MAX_DEPTH is far below the limit
        raise InvalidInput("YAML nested too deeply") from exc
    finally:
        loader.dispose()


def load_json(text: str, where: str) -> Any:
    _check_size(text, where)
    depth = 0
    for ch in text:  # brackets inside strings count too: only ever an over-estimate
        if ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{where}: unreadable JSON: {exc}") from exc


class Fields:
    """One mapping of an import document, read field by field with types checked.

    ``model``: the model it describes (named in every error); ``where``: how a message names the
    mapping (``model 'x'``, ``[x] llamastudio comment``)."""

    def __init__(self, data: object, where: str, model: str | None = None, path: str = "") -> None:
        self.where = where
        self.model = model
        self.path = path
        if not isinstance(data, dict):
            raise self.error("", f"must be a mapping (got {kind(data)})")
        self.data: dict[Any, Any] = data

    def error(self, key: str, problem: str) -> InvalidInput:
        """The 400 for field ``key`` of this mapping ("" = the mapping itself)."""
        field = f"{self.path}.{key}" if self.path and key else (key or self.path)
        details: dict[str, Any] = {"field": field} if field else {}
        if self.model is not None:
            details["model"] = self.model
        label = f"`{field}` " if field else ""
        return InvalidInput(f"{self.where}: {label}{problem}", **details)

    def __contains__(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"must be a string (got {kind(value)})")
        if "\0" in value:
            raise self.error(key, "must not contain NUL bytes")
        return value

    def number(self, key: str, lo: float, hi: float) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number (got {kind(value)})")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.error(key, f"must be from {lo:g} to {hi:.0f}")
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be a whole number (got {kind(value)})")
        if not lo <= value <= hi:
            raise self.error(key, f"must be from {lo} to {hi}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false (got {kind(value)})")
        return value

    def texts(self, key: str) -> list[str]:
        """A list of strings (absent or null: [])."""
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of strings (got {kind(value)})")
        for item in value:
            if not isinstance(item, str):
                raise self.error(key, f"must be a list of strings (an item is {kind(item)})")
            if "\0" in item:
                raise self.error(key, "must not contain NUL bytes")
        return list(value)

    def names(self, key: str) -> list[str]:
        """A list of names; YAML reads ``123`` as a number, taken as the name ``"123"``."""
        value = self.data.get(key)
        if isinstance(value, list):
            value = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return Fields({key: value}, self.where, self.model, self.path).texts(key)

    def mapping(self, key: str) -> Fields:
        """A nested mapping (absent or null: an empty one)."""
        value = self.data.get(key)
        path = f"{self.path}.{key}" if self.path else key
        return Fields({} if value is None else value, self.where, self.model, path)

    def env_list(self, key: str) -> dict[str, str]:
        """llama-swap's ``env``: a list of ``"KEY=VALUE"`` strings."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, list):
            raise self.error(key, f'must be a list of "KEY=VALUE" strings (got {kind(value)})')
        env: dict[str, str] = {}
        for item in self.texts(key):
            name, eq, val = item.partition("=")
            if not eq or not _ENV_NAME.fullmatch(name):
                raise self.error(
                    key, f'every entry must be "KEY=VALUE" with KEY a variable name ({item[:60]!r})'
                )
            env[name] = val
        return env

    def env_map(self, key: str) -> dict[str, str]:
        """The studio's own ``env``: a mapping of variable names to strings."""
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping of variable names to strings (got {kind(value)})")
        for name, val in value.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise self.error(key, f"{str(name)[:60]!r} is not a variable name")
            if not isinstance(val, str) or "\0" in val:
                raise self.error(key, f"{name}: must be a string without NUL bytes (got {kind(val)})")
        return dict(value)

    def counts(self, key: str) -> dict[str, int] | None:
        """A mapping of device names to byte counts (``reserve``)."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping of device names to bytes (got {kind(value)})")
        for dev, n in value.items():
            if not isinstance(dev, str) or isinstance(n, bool) or not isinstance(n, int):
                raise self.error(key, "must map device names to whole numbers of bytes")
        return dict(value)
