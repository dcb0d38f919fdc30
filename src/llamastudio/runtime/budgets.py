"""Memory budgets: what each device may hold across all models, as pure functions of hardware.

- At start: free memory minus the planner's margins (``budgets_of``), read after the orphans of a
  killed studio are gone.
- While serving: a GPU's budget follows its live free memory plus what the studio's own loaded
  engines reserve on it (``follow_gpus``); RAM stays as measured at start (mmap'd weights count
  as reclaimable cache in "available").
- Preloading: a model starts only if it fits next to those preloaded before it (``short_of``);
  preloading never evicts a preloaded model.
"""

from __future__ import annotations

from collections.abc import Mapping

from llamastudio.fit.planner import GPU_MARGIN, HOST_MARGIN
from llamastudio.hardware.devices import Hardware


def budgets_of(hw: Hardware) -> dict[str, int]:
    """Bytes each device may hold across all models: free memory minus the planner's margins."""
    out = {g.device_name: max(0, g.free - GPU_MARGIN) for g in hw.gpus}
    out["CPU"] = max(0, hw.ram_free - HOST_MARGIN)
    return out


def follow_gpus(start: Hardware, live: Hardware, ours: Mapping[str, int]) -> dict[str, int]:
    """The budgets with each GPU's from ``live`` free memory plus ``ours`` (bytes the studio's
    running engines reserve on it); RAM and GPUs the live probe does not see stay as at start."""
    budgets = budgets_of(start)
    for dev, free in budgets_of(live).items():
        if dev != "CPU" and dev in budgets:
            budgets[dev] = free + ours.get(dev, 0)
    return budgets


def short_of(reserve: Mapping[str, int], used: Mapping[str, int], budgets: Mapping[str, int]) -> list[str]:
    """The devices where ``reserve`` does not fit next to ``used`` (empty: it fits)."""
    return [d for d, n in reserve.items() if used.get(d, 0) + n > budgets.get(d, 0)]
