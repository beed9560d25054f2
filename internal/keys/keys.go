// Package keys derives the keys a node keeps its data under from the keys
// it holds: one function, one label convention, and the table of every
// label in use.
//
// Convention: a key is HKDF-SHA256 (RFC 5869) of a secret, an optional
// salt, and the info string
//
//	"pipes/v1 " || label || id
//
// where label is one of the constants below and id, when the key belongs
// to one object (a pipeline's log), is that object's raw id, appended
// without a separator. No label is a prefix of another, so two (label, id)
// pairs never give the same info. The "pipes/v1 " prefix keeps these keys
// apart from every other use of the same secrets (signatures and MACs use
// their own "pipes/v1 ..." contexts).
//
// The table, by secret:
//
//	secret               salt          label                  id           yields
//	network key          network id    StoreKey               —            the node's store key
//	store key            —             Blobs                  —            the blob store's key
//	store key            —             Definitions            —            sealed definitions and tombstones
//	store key            —             PipelineKeys           —            sealed pipeline keys
//	store key            —             PipelineLog            pipeline id  one pipeline's history
//	blob store key       blob root     BlobKey                —            one blob's header key
//	pipeline key (raw)   —             PipelinePacketKey      —            packet data encryption key
//	pipeline key (raw)   —             PipelineSecretKey      —            the Ed25519 seed proving the secret
//
// These keys protect data at rest: a label, a salt or a secret changed
// here leaves every existing data directory unreadable. The package's
// known-answer tests and the root package's fixture data directory
// (testdata/datadir-v1) hold them fixed; a new key gets a new label.
package keys

import (
	"crypto/hkdf"
	"crypto/sha256"
)

// Label names what a derived key is for; see the package comment.
type Label string

// The labels in use. Keep them unique and none a prefix of another.
const (
	StoreKey          Label = "store key"
	Blobs             Label = "blobs"
	Definitions       Label = "definitions"
	PipelineKeys      Label = "pipeline keys"
	PipelineLog       Label = "pipeline log"
	BlobKey           Label = "blob key"
	PipelinePacketKey Label = "pipeline packet key"
	PipelineSecretKey Label = "pipeline secret key"
)

// Labels lists every label, for tests that check the table.
var Labels = []Label{StoreKey, Blobs, Definitions, PipelineKeys, PipelineLog, BlobKey, PipelinePacketKey, PipelineSecretKey}

// prefix starts every info string.
const prefix = "pipes/v1 "

// Derive returns n bytes of HKDF-SHA256(secret, salt, "pipes/v1 " || label
// || id). salt and id may be nil. n is a constant of the caller's (at most
// 255*32 bytes): Derive panics on a length HKDF-SHA256 cannot produce.
func Derive(secret, salt []byte, label Label, id []byte, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, salt, prefix+string(label)+string(id), n)
	if err != nil {
		panic("keys: " + err.Error()) // only for lengths HKDF-SHA256 cannot produce
	}
	return k
}
