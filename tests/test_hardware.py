"""Device discovery on recorded readings, NVLink topology, and hardware profiles."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.hardware.amd import parse_rocm_smi
from llamastudio.hardware.devices import Gpu
from llamastudio.hardware.discover import metal_gpu
from llamastudio.hardware.nvidia import discover_nvidia
from llamastudio.hardware.profiles import parse_profile, parse_size
from llamastudio.hardware.topology import classify, nvlink_groups
from llamastudio.hardware.vulkan import parse_vulkaninfo

FIXTURES = Path(__file__).parent / "fixtures"
GiB = 1 << 30


class RecordedNvml:
    """Replays recorded NVML readings through pynvml's function names."""

    class NotSupported(Exception):
        pass

    def __init__(self, path: Path) -> None:
        self.devices = json.loads(path.read_text())["devices"]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.devices[i]  # type: ignore[no-any-return]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> bytes:
        return h["name"].encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return h["uuid"]  # type: ignore[no-any-return]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    def nvmlDeviceGetPciInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(busId=h["busId"])

    def nvmlDeviceGetCudaComputeCapability(self, h: dict[str, Any]) -> tuple[int, int]:
        return tuple(h["cc"])  # type: ignore[return-value]

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return h["temp"]  # type: ignore[no-any-return]

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        if h["power_mw"] is None:
            raise self.NotSupported()
        return h["power_mw"]  # type: ignore[no-any-return]

    def nvmlDeviceGetNvLinkState(self, h: dict[str, Any], link: int) -> int:
        if link >= len(h["nvlinks"]):
            raise self.NotSupported()
        return 1

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: dict[str, Any], link: int) -> SimpleNamespace:
        return SimpleNamespace(busId=h["nvlinks"][link])


def test_nvml_cuda_order_and_readings() -> None:
    gpus = discover_nvidia(RecordedNvml(FIXTURES / "nvml_4gpu.json"), visible=None)
    assert [g.pci_bus_id for g in gpus] == ["0000:01:00.0", "0000:02:00.0", "0000:81:00.0", "0000:82:00.0"]
    assert [g.device_name for g in gpus] == ["CUDA0", "CUDA1", "CUDA2", "CUDA3"]
    g0 = gpus[0]
    assert g0.name == "NVIDIA GeForce RTX 3090" and g0.total == 24 * GiB and g0.free == 20401094656
    assert g0.compute_capability == "8.6" and g0.utilization_pct == 37 and g0.power_w == 180.5
    assert gpus[3].power_w is None  # unsupported reading → None, not a crash
    assert [g.nvlink_peers for g in gpus] == [(1,), (0,), (3,), (2,)]
    assert nvlink_groups(gpus) == [[0, 1], [2, 3]]
    assert classify(gpus) == "clusters"


def test_cuda_visible_devices_filters_and_reindexes() -> None:
    nvml = RecordedNvml(FIXTURES / "nvml_4gpu.json")
    gpus = discover_nvidia(nvml, visible="2,0")
    assert [g.pci_bus_id for g in gpus] == ["0000:81:00.0", "0000:01:00.0"]
    assert [g.index for g in gpus] == [0, 1] and all(g.nvlink_peers == () for g in gpus)
    assert [g.pci_bus_id for g in discover_nvidia(nvml, visible="GPU-c0ffee03")] == ["0000:82:00.0"]
    assert discover_nvidia(nvml, visible="") == []
    assert len(discover_nvidia(nvml, visible="1,9,0")) == 1  # CUDA stops at the first invalid id


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ({0: (1, 2), 1: (0, 2), 2: (0, 1)}, "all-connected"),
        ({0: (1,), 1: (0, 2), 2: (1,)}, "partial"),
        ({0: (), 1: (), 2: ()}, "none"),
    ],
)
def test_topology_classes(links: dict[int, tuple[int, ...]], expected: str) -> None:
    gpus = [Gpu(index=i, name="g", total=GiB, free=GiB, nvlink_peers=p) for i, p in links.items()]
    assert classify(gpus) == expected


def test_rocm_smi_json() -> None:
    gpus = parse_rocm_smi((FIXTURES / "rocm_smi.json").read_text())
    assert [g.name for g in gpus] == ["AMD Radeon RX 7900 XTX"] * 2
    assert gpus[0].total == 25753026560 and gpus[0].free == 25753026560 - 1231806464
    assert gpus[1].pci_bus_id == "0000:0c:00.0" and gpus[0].device_name == "ROCm0"


def test_vulkaninfo_skips_cpu_devices_and_reads_heaps() -> None:
    gpus = parse_vulkaninfo(
        (FIXTURES / "vulkaninfo_summary.txt").read_text(), (FIXTURES / "vulkaninfo_full.txt").read_text()
    )
    assert len(gpus) == 1
    assert gpus[0].name == "AMD Radeon RX 7900 XTX (RADV NAVI31)"
    assert gpus[0].total == 25753026560 and gpus[0].free == 25128075264
    assert gpus[0].device_name == "Vulkan0"


def test_metal_working_set() -> None:
    gpu = metal_gpu(64 * GiB, 40 * GiB)
    assert gpu.total == 48 * GiB and gpu.free == 40 * GiB and gpu.device_name == "MTL0"


def test_profiles(tmp_path: Path) -> None:
    assert parse_profile("cpu", 64 * GiB, 60 * GiB).gpus == ()
    two = parse_profile("2x24GiB", 64 * GiB, 60 * GiB)
    assert [g.total for g in two.gpus] == [24 * GiB] * 2 and two.ram_total == 64 * GiB
    named = parse_profile("rtx3090, rtx4090", 64 * GiB, 60 * GiB)
    assert [g.name for g in named.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 4090"]
    assert [g.index for g in parse_profile("2xa100-80gb,h100", 1, 1).gpus] == [0, 1, 2]
    f = tmp_path / "box.json"
    f.write_text(
        json.dumps(
            {
                "gpus": [
                    {"name": "A", "memory": "48GiB", "free": "40GiB", "nvlink": [1]},
                    {"name": "B", "memory": "48GiB", "nvlink": [0]},
                ],
                "ram": "256GiB",
            }
        )
    )
    box = parse_profile(str(f), 1, 1)
    assert (
        box.gpus[0].free == 40 * GiB and box.ram_total == 256 * GiB and classify(box.gpus) == "all-connected"
    )
    assert (
        parse_size("24576MiB") == 24 * GiB
        and parse_size("80GB") == 80 * 10**9
        and parse_size("24") == 24 * GiB
    )
    for bad in ("3x", "rtx9999", "0x24GiB", "24 parsecs"):
        with pytest.raises(InvalidInput):
            parse_profile(bad, 1, 1)
