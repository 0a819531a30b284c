# syntax=docker/dockerfile:1
# The REST/JSON + OpenAI-compatible gateway (services/gateway): a static Go binary on distroless.
# Build from the repository root:
#   docker buildx build -f deploy/docker/gateway.Dockerfile -t REGISTRY/llmops-gateway:TAG .

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY services/gateway/go.mod services/gateway/go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY services/gateway/ ./
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} GOTOOLCHAIN=local \
    go build -trimpath -ldflags="-s -w" -o /out/llmops-gateway .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/llmops-gateway /llmops-gateway
# Listen on every interface inside the container; the backend is the services' gRPC address.
ENV LLMOPS_GATEWAY_LISTEN=0.0.0.0:8000 \
    LLMOPS_GATEWAY_BACKEND=services:50051
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/llmops-gateway"]
