#!/bin/sh
# Regenerates internal/wire/pb from proto/. The Go plugin version is pinned by
# the `tool` line in go.mod; protoc is Debian's protobuf-compiler 3.21.12
# (apt-get install protobuf-compiler). See docs/protocol.md.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cd "$root"
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
protoc --plugin=protoc-gen-go="$bin/protoc-gen-go" -I proto \
  --go_out=. --go_opt=module=github.com/pipesnet/pipes pipes/v1/pipes.proto
