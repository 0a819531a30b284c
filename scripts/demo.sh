#!/usr/bin/env bash
# The demo of the core loop (`make demo`): starts the embedded stack (`llmops up`: private Redis,
# SQLite, local artifacts, one worker) on free ports, runs scripts/demo.py against it through the
# SDK (tiny models, SFT, gated evals, promotion, DPO, QLoRA, distillation), and stops the stack
# cleanly. The data dir (LLMOPS_DEMO_DIR, default artifacts/demo) is kept between runs: the tiny
# models are built once, and each run makes new jobs and eval runs. Arguments go to demo.py
# (`--profile ci` runs the shorter loop CI runs). Exits non-zero when the proof does not hold.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
data=${LLMOPS_DEMO_DIR:-$root/artifacts/demo}
mkdir -p "$data"
rm -f "$data/stack.json"

# The promotion step needs `production` protected, whatever the caller's environment says.
export LLMOPS_PROTECTED_ALIASES='["production"]'
unset LLMOPS_REDIS_URL LLMOPS_DATABASE_URL LLMOPS_ARTIFACTS_URL LLMOPS_API_KEY

llmops up --grpc-port 0 --http-port 0 --metrics-port 0 --data-dir "$data" >"$data/up.out" 2>"$data/server.log" &
stack=$!
trap 'kill -TERM $stack 2>/dev/null || true; wait $stack 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  [ -s "$data/stack.json" ] && break
  kill -0 $stack 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$data/stack.json" ] || { echo "the stack did not start; see $data/server.log" >&2; exit 1; }
address=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$data/stack.json")
# The REST gateway's address is added to stack.json once it is up (absent without Go).
for _ in $(seq 100); do
  rest=$(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("rest", ""))' "$data/stack.json")
  [ -n "$rest" ] && break
  grep -q "^REST     not started" "$data/up.out" && break
  sleep 0.1
done
echo "stack up: gRPC $address, REST ${rest:-none}, data $data, server log $data/server.log"

status=0
python scripts/demo.py --address "$address" --rest-url "$rest" --data-dir "$data" "$@" || status=$?

kill -TERM $stack
wait $stack
trap - EXIT
echo "stack stopped cleanly"
exit $status
