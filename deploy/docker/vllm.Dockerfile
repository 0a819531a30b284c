# syntax=docker/dockerfile:1
# vLLM's OpenAI-compatible server (the Inference service's vLLM engine talks to it), from the
# official image, run as a non-root user. Models and adapters are not baked in: the platform's
# data volume is mounted read-only at /data, the same path the services and workers use, because
# the engine loads adapters by the path the Registry resolves (docs/deploy.md).
# Build from the repository root:
#   docker buildx build -f deploy/docker/vllm.Dockerfile -t REGISTRY/llmops-vllm:TAG .

FROM vllm/vllm-openai:v0.32.0
RUN groupadd --system --gid 10001 vllm \
    && useradd --system --uid 10001 --gid vllm --home-dir /home/vllm --create-home vllm
ENV HOME=/home/vllm \
    HF_HOME=/home/vllm/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
USER 10001:10001
EXPOSE 8000
# vLLM's OpenAI server (the module the project's vLLM tests start); its arguments (--model,
# --served-model-name, --enable-lora, ...) come from compose or the Deployment.
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
