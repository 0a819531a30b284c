#!/usr/bin/env bash
# Regenerates the gateway's Go code (services/gateway/gen) and the merged OpenAPI v2 document
# (docs/openapi/llmops.swagger.json, embedded as services/gateway/openapi/llmops.swagger.json)
# from the protos, with buf and the local plugins in .bin/ (scripts/install_go.sh --plugins).
# With an argument, writes the same tree under that directory instead of the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
export PATH="$root/.bin:$root/.venv/bin:$PATH"
missing=()
for tool in buf protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway protoc-gen-openapiv2; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "gen_gateway.sh: missing ${missing[*]}; run \`make gateway-tools\` (installs Go if needed and the plugins into .bin/)" >&2
  exit 1
fi
cd "$root"
rm -rf "$out/services/gateway/gen/llmops" "$out/docs/openapi/llmops.swagger.json" \
  "$out/services/gateway/openapi/llmops.swagger.json"
buf generate -o "$out"
python3 "$root/scripts/tighten_openapi.py" "$out/docs/openapi/llmops.swagger.json" \
  "$out/services/gateway/openapi/llmops.swagger.json"
