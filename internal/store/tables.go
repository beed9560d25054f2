package store

// Tables: the first byte of every key in a platform's store, allocated
// here and nowhere else, so that no two parts of the code share one. The
// owner of each table documents its key layout (named after each group).
const (
	// The platform's records (root package, records.go).
	TIdentity = 'i' // i | identity id              -> identity record
	TNetwork  = 'n' // n | network id               -> network record
	TNode     = 'd' // d | node id                  -> node record
	TKnown    = 'k' // k | local node id | node id  -> known node
	TBoot     = 'b' // b | network id | listed id   -> bootstrap entry

	// Pipeline histories and what the engine keeps (package history).
	TLog    = 'L' // sealed blocks of records
	TByID   = 'X' // index by packet id
	TBySeq  = 'Q' // index by sender sequence
	THead   = 'H' // heads (version vector)
	TSender = 'N' // sender numbers
	TProof  = 'G' // batch signatures
	TBytes  = 'T' // data bytes stored
	TCert   = 'C' // certificates of senders
	TDef    = 'F' // sealed definitions
	THandle = 'P' // log handles
	TIndex  = 'W' // how far the id index reaches
	TSecret = 'S' // sealed pipeline keys
	TTomb   = 'Z' // sealed tombstones
	TFetch  = 'Y' // files to fetch
	TOwner  = 'O' // owners of stored files

	// Services' namespaces: 'v' | local node id | service name | 0 | key
	// (package service, StoreNamespace).
	TServices = 'v'
)

// Tables lists every table tag with its name, for the test that no two
// share a byte and for tools that walk the store.
var Tables = map[string]byte{
	"identity": TIdentity, "network": TNetwork, "node": TNode, "known": TKnown, "boot": TBoot,
	"log": TLog, "by-id": TByID, "by-seq": TBySeq, "head": THead, "sender": TSender,
	"proof": TProof, "bytes": TBytes, "cert": TCert, "def": TDef, "handle": THandle,
	"index": TIndex, "secret": TSecret, "tomb": TTomb, "fetch": TFetch, "owner": TOwner,
	"services": TServices,
}
