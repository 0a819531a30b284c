# syntax=docker/dockerfile:1
# A training/eval worker (`llmops worker`) for NVIDIA GPUs: the same code and the same uv.lock as
# the services image, on a CUDA base. torch's wheels in the lock carry their own CUDA 13 user-space
# libraries (nvidia-* packages); the base image supplies the NVIDIA container runtime's
# environment and driver-compatibility metadata. The host needs an NVIDIA driver recent enough for
# CUDA 13. Build from the repository root:
#   docker buildx build -f deploy/docker/worker.Dockerfile -t REGISTRY/llmops-worker:TAG .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM nvidia/cuda:13.0.0-base-ubuntu24.04 AS build
COPY --from=uv /uv /usr/local/bin/uv
# Ubuntu 24.04 ships Python 3.12; the lock needs 3.11, so uv installs a standalone CPython 3.11.14
# (the services image's version) into /opt/python (copied into the final stage at the same path the venv points to).
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PYTHON=3.11.14 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
RUN uv python install 3.11.14
COPY pyproject.toml uv.lock ./
COPY clients/python/pyproject.toml clients/python/pyproject.toml
COPY ml/pyproject.toml ml/pyproject.toml
COPY workers/pyproject.toml workers/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
# Editable installs (uv's default for workspace members), not --no-editable: the services and
# workers find config/ (prompt templates, bundled datasets, eval gates) relative to their source
# files in the repository layout, which /app keeps.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

FROM nvidia/cuda:13.0.0-base-ubuntu24.04
RUN groupadd --system --gid 10001 llmops \
    && useradd --system --uid 10001 --gid llmops --home-dir /data --no-create-home llmops \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/python /opt/python
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/hf \
    LLMOPS_DATA_DIR=/data \
    LLMOPS_CONFIG_DIR=/app/config \
    LLMOPS_GRPC_HOST=0.0.0.0 \
    LLMOPS_WORKER_METRICS_PORT=9465
WORKDIR /data
USER 10001:10001
EXPOSE 9465
ENTRYPOINT ["llmops"]
CMD ["worker"]
