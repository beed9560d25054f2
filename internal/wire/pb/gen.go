// Package pb holds the Go code generated from proto/pipes/v1/pipes.proto.
//
// It is a leaf package (it imports only the protobuf runtime) so that every
// layer, identity and netfile included, can share one schema. Regenerate with
// `go generate ./internal/wire/pb` (needs protoc; see docs/protocol.md).
package pb

//go:generate sh ../../../scripts/genproto.sh
