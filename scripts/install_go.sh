#!/usr/bin/env bash
# Makes sure a Go toolchain >= 1.26 exists and prints the directory of its `go` binary.
# Uses `go` from PATH or /usr/local/go/bin; else downloads the official toolchain zip from the Go
# module proxy (Debian's golang is too old) into .bin/go-toolchain/, once.
# With --find, only looks (exit 1 when there is none); with --plugins, also installs the protoc
# plugins that scripts/gen_gateway.sh runs, and grpcurl, into .bin/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO_VERSION=${GO_VERSION:-1.26.8}
GO_MIN_MINOR=26
GOPROXY_URL=${GOPROXY_URL:-https://proxy.golang.org}
toolchain=$root/.bin/go-toolchain
export GOTOOLCHAIN=local

usable() { # $1: a go binary; true when it runs and is 1.$GO_MIN_MINOR or newer
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= GO_MIN_MINOR))
}

find_go() {
  local candidate
  for candidate in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$toolchain/go/bin/go"; do
    if [[ -n $candidate && -x $candidate ]] && usable "$candidate"; then
      dirname "$candidate"
      return 0
    fi
  done
  return 1
}

download_go() {
  local arch url
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "install_go.sh: no Go toolchain for $(uname -m); install Go >= 1.$GO_MIN_MINOR" >&2; exit 1 ;;
  esac
  url="$GOPROXY_URL/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-$arch.zip"
  echo "install_go.sh: downloading Go $GO_VERSION from $url" >&2
  zip=$(mktemp --suffix .zip)
  curl -fsSL --retry 3 -o "$zip" "$url"
  rm -rf "$toolchain.tmp" && mkdir -p "$toolchain.tmp"
  # The zip holds golang.org/toolchain@v0.0.1-go<version>.linux-<arch>/{bin,src,pkg,...}.
  python3 -m zipfile -e "$zip" "$toolchain.tmp"
  mkdir -p "$toolchain.tmp/out"
  mv "$toolchain.tmp"/golang.org/toolchain@*/ "$toolchain.tmp/out/go"
  chmod +x "$toolchain.tmp/out/go/bin/"* "$toolchain.tmp/out/go/pkg/tool/"*/*
  rm -rf "$toolchain" && mv "$toolchain.tmp/out" "$toolchain" && rm -rf "$toolchain.tmp"
}

zip=""
trap 'rm -f "$zip"; rm -rf "$toolchain.tmp"' EXIT

if [[ ${1:-} == --find ]]; then
  find_go
  exit
fi
godir=$(find_go) || { download_go; godir=$(find_go); }

if [[ ${1:-} == --plugins ]]; then
  # Versions pinned here and nowhere else; go install puts them in .bin/.
  export GOBIN=$root/.bin
  "$godir/go" install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  "$godir/go" install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
  "$godir/go" install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.34.0 \
    github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.34.0
  # grpcurl: the docs' gRPC examples, and the tests that run them.
  "$godir/go" install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
fi
echo "$godir"
