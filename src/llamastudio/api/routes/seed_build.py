"""The seed's ``build_config`` — backends as ``enable_*`` switches, CMake options as booleans,
``custom_cmake_args`` as one string — as the studio's build request (``engines.BuildIn``).

What cannot be honoured is refused with the reason, never dropped: switches that would leave out
llama-server (the program the studio runs), shared-library options (the studio builds static
binaries), a build environment (``env_vars``). ``enable_rocm`` is the studio's addition (the
seed's README names ROCm; its build settings had no switch for it).
"""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.routes.engines import BuildIn
from llamastudio.errors import InvalidInput

_BACKENDS = (
    ("enable_cuda", "cuda"),
    ("enable_vulkan", "vulkan"),
    ("enable_metal", "metal"),
    ("enable_openblas", "openblas"),
    ("enable_rocm", "hip"),
)
# set explicitly, these become the CMake option (the studio builds only its targets either way)
_OPTIONS = (("build_tests", "LLAMA_BUILD_TESTS"), ("build_examples", "LLAMA_BUILD_EXAMPLES"))
_SERVER_NEEDS = ("build_common", "build_tools", "build_server")


class SeedBuildConfig(BaseModel):
    """The seed's build settings (its ``BuildConfig``), with its defaults."""

    model_config = ConfigDict(extra="forbid")

    build_type: Literal["Release", "Debug", "RelWithDebInfo"] = "Release"
    enable_cuda: bool = False
    enable_vulkan: bool = False
    enable_metal: bool = False
    enable_openblas: bool = False
    enable_rocm: bool = Field(False, description="ROCm/HIP (the studio's addition).")
    enable_flash_attention: bool = Field(
        False, description="`-DGGML_CUDA_FA_ALL_QUANTS=ON`: flash-attention kernels for every quant (CUDA)."
    )
    build_common: bool = Field(True, description="Must stay on: llama-server needs it.")
    build_tests: bool = True
    build_tools: bool = Field(True, description="Must stay on: llama-server is one of the tools.")
    build_examples: bool = True
    build_server: bool = Field(True, description="Must stay on: the studio runs llama-server.")
    install_tools: bool = Field(
        True, description="Accepted; no effect: the studio keeps the programs it runs (llama-server)."
    )
    enable_backend_dl: bool = Field(False, description="Refused: needs shared libraries.")
    enable_cpu_all_variants: bool = Field(False, description="Refused: needs enable_backend_dl.")
    enable_lto: bool = Field(False, description="`-DGGML_LTO=ON`.")
    enable_native: bool = Field(True, description="Off: `-DGGML_NATIVE=OFF` (portable binaries).")
    custom_cmake_args: str = Field("", description="More `-DNAME=VALUE` arguments, shell-quoted.")
    cuda_architectures: str = Field("", description="e.g. `86;89`; empty: from the GPUs found.")
    cflags: str = ""
    cxxflags: str = ""
    env_vars: dict[str, str] = Field(default_factory=dict, description="Refused unless empty.")


def build_in(source: str, ref: str, patches: list[str], cfg: SeedBuildConfig) -> BuildIn:
    """The studio's build request for the seed's ``commit_sha``, ``patches`` and ``build_config``."""
    off = [key for key in _SERVER_NEEDS if not getattr(cfg, key)]
    if off:
        raise InvalidInput(
            f"build_config.{off[0]}: false would leave out llama-server, which the studio runs"
        )
    if cfg.enable_backend_dl or cfg.enable_cpu_all_variants:
        raise InvalidInput(
            "build_config.enable_backend_dl / enable_cpu_all_variants need shared libraries; "
            "the studio builds static binaries"
        )
    if cfg.env_vars:
        raise InvalidInput(
            "build_config.env_vars: the studio builds with its own environment; give CMake settings "
            "in custom_cmake_args (-DNAME=VALUE)"
        )
    cmake: list[str] = []
    if cfg.enable_flash_attention:
        if not cfg.enable_cuda:
            raise InvalidInput(
                "build_config.enable_flash_attention builds CUDA kernels: it needs enable_cuda"
            )
        cmake.append("-DGGML_CUDA_FA_ALL_QUANTS=ON")
    for key, option in _OPTIONS:
        if key in cfg.model_fields_set:
            cmake.append(f"-D{option}={'ON' if getattr(cfg, key) else 'OFF'}")
    if cfg.enable_lto:
        cmake.append("-DGGML_LTO=ON")
    if not cfg.enable_native:
        cmake.append("-DGGML_NATIVE=OFF")
    try:
        cmake += shlex.split(cfg.custom_cmake_args)
    except ValueError as exc:
        raise InvalidInput(f"build_config.custom_cmake_args: {exc}") from None
    return BuildIn(
        source=source,
        ref=ref,
        backends=[backend for key, backend in _BACKENDS if getattr(cfg, key)] or ["cpu"],
        build_type=cfg.build_type,
        cuda_architectures=cfg.cuda_architectures or None,
        cmake_args=cmake,
        cflags=cfg.cflags,
        cxxflags=cfg.cxxflags,
        patches=patches,
    )
