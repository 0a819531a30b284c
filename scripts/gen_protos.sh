#!/usr/bin/env bash
# Regenerates the Python stubs of the contract into the client package (or into $1).
# Output mirrors the proto path: protos/llmops/v1/x.proto -> llmops/v1/x_pb2.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/clients/python}
cd "$root"
rm -f "$out"/llmops/v1/*_pb2*.py "$out"/llmops/v1/*_pb2*.pyi
mkdir -p "$out/llmops/v1"
python -m grpc_tools.protoc -I protos -I third_party/googleapis \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/llmops/v1/*.proto
touch "$out/llmops/v1/__init__.py"
