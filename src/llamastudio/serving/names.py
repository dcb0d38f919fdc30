"""The name index: which model a requested name means, with one precedence.

    1. a model's name (a configured name, or the name a library model nobody configured is served
       under)
    2. an alias
    3. a library id or path (``repo:QUANT``, an added file's path) — the model configured with it

A later tier never shadows an earlier one, whatever the order configurations were stored in. At
save time an alias that would lose to (or take from) another model is refused: an alias equal to
another model's name, another model's alias, or the library id of a model other than its own
(``check_names``). Stored data from older versions that breaks these rules cannot hijack a name
either: the index still resolves by precedence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from llamastudio.errors import Conflict


class Named(Protocol):
    """What the index reads of a configuration (``models.ModelConfig``)."""

    name: str
    model: str
    aliases: list[str]


class LibraryEntry(Protocol):
    """What the checks read of a library model (``hub.library.LocalModel``)."""

    id: str
    path: str


C = TypeVar("C", bound=Named)


def name_index(configs: Iterable[Named]) -> dict[str, str]:
    """Requested name → model name, by the precedence above (first one wins within a tier)."""
    every = list(configs)
    index: dict[str, str] = {}
    for c in every:
        if c.model:
            index.setdefault(c.model, c.name)
    aliases: set[str] = set()
    for c in every:
        for a in c.aliases:
            if a not in aliases:
                aliases.add(a)
                index[a] = c.name
    for c in every:
        index[c.name] = c.name
    return index


def check_names(
    batch: Sequence[C],
    stored: Sequence[C],
    library: Sequence[LibraryEntry],
    served: Callable[[list[C]], Sequence[Named]],
) -> None:
    """Refuse (409, naming the clash) a batch about to be stored whose names or aliases collide
    with each other, with stored configurations, or with library models. ``served`` lists every
    model served once the batch is stored (stored configurations + library models nobody
    configured), as ``ModelConfigs.all`` does."""
    names: set[str] = set()
    for cfg in batch:
        if cfg.name in names:
            raise Conflict(f"model {cfg.name!r} appears twice", model=cfg.name)
        names.add(cfg.name)
    every = served([c for c in stored if c.name not in names] + list(batch))
    served_names = {c.name for c in every}
    alias_of: dict[str, list[str]] = {}
    for c in every:
        for a in c.aliases:
            alias_of.setdefault(a, []).append(c.name)
    by_id = {key: m for m in library for key in (m.id, m.path)}
    for cfg in batch:
        others = [o for o in alias_of.get(cfg.name, []) if o != cfg.name]
        if others:
            raise Conflict(
                f"model name {cfg.name!r} is already an alias of model {others[0]!r}", model=cfg.name
            )
        own = by_id.get(cfg.model)
        for a in cfg.aliases:
            why = None
            if a in served_names:
                why = f"the name of model {a!r}"
            elif any(o != cfg.name for o in alias_of.get(a, [])):
                why = f"already an alias of model {next(o for o in alias_of[a] if o != cfg.name)!r}"
            elif a in by_id and by_id[a] is not own:
                why = f"the library id of another model ({by_id[a].path})"
            if why:
                raise Conflict(f"alias {a!r} of model {cfg.name!r} is {why}", model=cfg.name, alias=a)
