"""Device discovery (NVML, AMD, Metal, Vulkan, CPU/RAM) and hardware profiles for what-if planning."""

from llamastudio.hardware.devices import Gpu, Hardware

__all__ = ["Gpu", "Hardware"]
