#!/usr/bin/env bash
# The demo of what this release serves: starts the stack on free ports, walks the Registry through
# the CLI (templates, datasets, a refused upload, API keys), and stops the stack cleanly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
data=${LLMOPS_DEMO_DIR:-$root/artifacts/demo}
mkdir -p "$data"
rm -f "$data/stack.json"

llmops up --grpc-port 0 --metrics-port 0 --data-dir "$data" >"$data/up.out" 2>"$data/server.log" &
stack=$!
trap 'kill -TERM $stack 2>/dev/null || true; wait $stack 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  [ -s "$data/stack.json" ] && break
  kill -0 $stack 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$data/stack.json" ] || { echo "the stack did not start; see $data/server.log" >&2; exit 1; }
LLMOPS_ADDRESS=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$data/stack.json")
export LLMOPS_ADDRESS
metrics=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"])' "$data/stack.json")

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "stack up: gRPC $LLMOPS_ADDRESS, metrics $metrics, data $data"
step llmops registry validate
step llmops registry list
step llmops registry show extraction
step llmops datasets list
step llmops datasets upload config/datasets/demo-sft.validation.jsonl --kind sft --name demo-sft-validation
printf '{"prompt": "ok", "completion": "fine"}\n{"prompt": 7}\nnot json\n' >"$data/broken.jsonl"
printf '\n\033[1m$ llmops datasets upload %s --kind sft\033[0m   (refused, naming each bad line)\n' "$data/broken.jsonl"
if llmops datasets upload "$data/broken.jsonl" --kind sft; then
  echo "a broken dataset was accepted" >&2
  exit 1
fi
step llmops models list
printf '\n\033[1m$ curl %s | grep grpc_server_handled_total\033[0m\n' "$metrics"
python - "$metrics" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines():
    if line.startswith("grpc_server_handled_total{") and "llmops.v1" in line:
        print(line)
PY
kill -TERM $stack
wait $stack
trap - EXIT
echo
echo "stack stopped cleanly; server log: $data/server.log"
