"""A peer: another OpenAI-compatible server (another studio, llama-swap, llama-server, vLLM …)
whose models the gateway lists and routes requests to. Registered by the user (API/CLI/Settings)
or imported from a llama-swap config's ``peers`` section; stored in SQLite.

This module is the one definition both sides use: the llama-swap importer produces these, the
peer registry (``services/peers.py``) stores, health-checks and routes to them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PeerSpec:
    name: str  # unique; models of the peer are listed under their own ids
    url: str  # base URL, e.g. http://10.0.0.5:2000 (the /v1 prefix is added by the gateway)
    api_key: str | None = None  # sent upstream as `Authorization: Bearer …`; never returned by the API
    models: list[str] = field(default_factory=list)  # llama-swap `models`: the ids routed to it
    strip_params: list[str] = field(default_factory=list)  # llama-swap `filters.stripParams`
    set_params: dict[str, object] = field(default_factory=dict)  # llama-swap `filters.setParams`
