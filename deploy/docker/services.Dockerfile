# syntax=docker/dockerfile:1
# The gRPC services (`llmops serve [registry|training|eval|inference ...]`) on CPU, built from
# uv.lock. Build from the repository root:
#   docker buildx build -f deploy/docker/services.Dockerfile -t REGISTRY/llmops-services:TAG .
# The image also holds the workers' package and its ML stack (the `ml` dependency group): the
# Inference service needs it with either engine (the transformers + PEFT engine loads models; the
# vLLM engine tokenizes with the base's transformers tokenizer), and it lets the image run
# `llmops worker` on CPU too. An image for the Registry, Training and Eval services alone, which
# load no model, can leave the ML stack out:
#   --build-arg UV_SYNC_ARGS="--no-dev --no-group ml"

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11.14-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ARG UV_SYNC_ARGS="--no-dev"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first (a layer that changes only with the lock), then the project itself.
COPY pyproject.toml uv.lock ./
COPY clients/python/pyproject.toml clients/python/pyproject.toml
COPY ml/pyproject.toml ml/pyproject.toml
COPY workers/pyproject.toml workers/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-install-workspace ${UV_SYNC_ARGS}
# Editable installs (uv's default for workspace members), not --no-editable: the services and
# workers find config/ (prompt templates, bundled datasets, eval gates) relative to their source
# files in the repository layout, which /app keeps.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen ${UV_SYNC_ARGS}

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 llmops \
    && useradd --system --uid 10001 --gid llmops --home-dir /data --no-create-home llmops \
    && mkdir -p /data \
    && chown 10001:10001 /data
# The code stays owned by root (read-only to the service); only /data is writable.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/hf \
    LLMOPS_DATA_DIR=/data \
    LLMOPS_CONFIG_DIR=/app/config \
    LLMOPS_GRPC_HOST=0.0.0.0
WORKDIR /data
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["llmops"]
CMD ["serve"]
