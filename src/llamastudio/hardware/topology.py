"""NVLink topology: which GPUs talk over NVLink, classified for the planner."""

from __future__ import annotations

from typing import Literal

from llamastudio.hardware.devices import Gpu

Topology = Literal["single", "all-connected", "clusters", "partial", "none"]


def nvlink_groups(gpus: tuple[Gpu, ...] | list[Gpu]) -> list[list[int]]:
    """Connected components of the NVLink graph (GPU indices)."""
    seen: set[int] = set()
    groups = []
    peers = {g.index: set(g.nvlink_peers) for g in gpus}
    for g in gpus:
        if g.index in seen:
            continue
        stack, comp = [g.index], []
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            comp.append(i)
            stack.extend(peers.get(i, ()))
        groups.append(sorted(comp))
    return groups


def classify(gpus: tuple[Gpu, ...] | list[Gpu]) -> Topology:
    """all-connected: every pair linked; clusters: fully linked groups of 2+; partial: anything
    else with links; none: no links at all."""
    if len(gpus) <= 1:
        return "single"
    peers = {g.index: set(g.nvlink_peers) for g in gpus}
    if not any(peers.values()):
        return "none"
    groups = nvlink_groups(gpus)
    full = all(all(peers[a] >= set(group) - {a} for a in group) for group in groups)
    if len(groups) == 1 and full:
        return "all-connected"
    if full and all(len(g) >= 2 for g in groups):
        return "clusters"
    return "partial"
