// Package blob is a content-addressed store of large files split in
// chunks, encrypted at rest. It keeps the content of file packets: the
// packet carries a blob's Manifest, the content travels and is stored
// chunk by chunk, and a receiver can read it while it arrives.
//
// # Manifest and root
//
// A Manifest lists the size of the content, the chunk size and the
// BLAKE3-256 hash of every chunk, plus a random per-file nonce that callers
// use to encrypt chunks (see Import). The blob's id, its root, is the
// BLAKE3-256 hash of the marshalled manifest, so the root commits to every
// byte of the content.
//
// The chunk size is a power of two: 256 KiB, or for files of more than
// 4 GiB the smallest larger power of two that keeps the number of chunks
// at most MaxChunks (16384), so a manifest stays under 600 KiB. The largest
// chunk is 64 MiB, for files of up to 1 TiB (MaxSize).
//
// # Transform
//
// Import can pass each chunk through a transform (callers encrypt chunks
// with a pipeline key) that returns exactly overhead bytes more than it is
// given, overhead a constant of the import. The manifest then describes
// the transformed content: Size counts and Chunks hash the transformed
// bytes, and the chunk boundaries are those of the transformed stream.
// Import feeds the transform ChunkSize-overhead bytes of input at a time,
// so every transformed chunk but the last is exactly ChunkSize bytes. A
// receiver that knows the overhead inverts the transform chunk by chunk
// (ReadChunk, or ChunkSize bytes at a time from Reader).
//
// # On disk
//
// Each blob is one file in the store's directory, named by the hex root:
//
//	[0:4]          length L of the sealed header (big endian)
//	[4:4+L]        header: nonce (12 random bytes) || ChaCha20-Poly1305 of
//	               data key (32 bytes) || marshalled manifest,
//	               under HKDF-SHA256(store key, salt = root, "pipes/v1 blob key"),
//	               root as associated data
//	[off:...]      one slot per chunk from off = 4+L rounded up to 4 KiB,
//	               slot i at off + i*(ChunkSize+16): chunk i sealed with
//	               ChaCha20-Poly1305 under the data key, nonce = index
//
// The data key is random per blob file. It exists because chunks are
// sealed as Import reads them, before the root (hence the key derived from
// it) is known; the header seals it under the root's key with the root as
// associated data, so a slot, or a header, moved to another blob does not
// open. Slot i only ever holds chunk i, whose bytes the manifest fixes, so
// the nonce derived from the index never seals two different plaintexts
// under one key. Nothing of the content or the manifest is stored in
// clear: the file's size and holes show only the chunk size and count,
// and which chunks are present.
//
// A chunk is present if and only if its slot opens (and its plaintext
// hashes to the manifest's entry, checked again on every read): an
// unwritten slot of the sparse file is zeros, and a torn or damaged slot
// fails to open, so it reads as missing, never as wrong data. A blob's
// header and file are synced when it is created (Import, Add); chunks
// written later are not synced one by one, and a crash may lose some of
// them, which then read as missing, but never turns a chunk into a wrong
// one.
//
// A blob is loaded on first use (its header read and opened). Which of
// its chunks are present is learnt lazily, a chunk the first time it is
// needed (ReadChunk, WriteChunk, Wait, or Missing and Complete, which
// check every chunk not known yet, reading the whole blob once after a
// restart), and kept in memory, one state per chunk, while the store is
// open. A blob the store created itself (Import, Add) starts fully known.
//
// Temporary files (names starting with "tmp-") hold imports in progress
// until their root is known; Open removes those a crash left behind. One
// Store at a time may use a directory.
package blob

import "errors"

// Limits of manifests.
const (
	// DefaultChunkSize is the chunk size of files of up to 4 GiB.
	DefaultChunkSize = 256 << 10
	// MinChunkSize is the smallest chunk size ParseManifest accepts.
	MinChunkSize = 64 << 10
	// MaxChunkSize is the largest chunk size ParseManifest accepts.
	MaxChunkSize = 64 << 20
	// MaxChunks is the largest number of chunks of a manifest.
	MaxChunks = 16384
	// MaxSize is the largest content size of a manifest (1 TiB).
	MaxSize = 1 << 40
	// MaxOverhead is the largest overhead Import accepts for a transform.
	MaxOverhead = 4096
)

// Errors, wrapped with context by the functions that return them.
var (
	// ErrNotFound: no such blob in the store (or no such chunk index).
	ErrNotFound = errors.New("blob: not found")
	// ErrMissing: the chunk is not present (not received yet, or damaged).
	ErrMissing = errors.New("blob: chunk missing")
	// ErrChunkMismatch: the data does not match the manifest's chunk
	// (hash, length or index).
	ErrChunkMismatch = errors.New("blob: chunk does not match the manifest")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("blob: store closed")
	// ErrBadManifest: a manifest, or a blob file's header, is malformed
	// or does not open.
	ErrBadManifest = errors.New("blob: bad manifest")
)
