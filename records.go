package pipes

import (
	"encoding/json"
	"time"

	"github.com/pipesnet/pipes/internal/store"
)

// Store tables (first key byte, allocated in package store). Records are
// JSON: they are local data, never network input. Private keys are not
// here but in files under keys/.
const (
	tIdentity = store.TIdentity // i | identity id            -> identityRecord
	tNetwork  = store.TNetwork  // n | network id             -> networkRecord
	tNode     = store.TNode     // d | node id                -> nodeRecord
	tKnown    = store.TKnown    // k | local node id | node id -> knownRecord
	tBoot     = store.TBoot     // b | network id | listed id  -> bootRecord
)

type identityRecord struct {
	Name    string    `json:"name"`
	Public  []byte    `json:"public"`
	Created time.Time `json:"created"`
}

type networkRecord struct {
	Netfile  []byte   `json:"netfile"`            // the netfile bytes, as added
	Gateways []string `json:"gateways,omitempty"` // added with AddGateway
	HasKey   bool     `json:"has_key"`            // keys/network-<id>.key holds the derived key
}

type nodeRecord struct {
	Network     NetworkID  `json:"network"`
	Identity    IdentityID `json:"identity"`
	Location    string     `json:"location"`
	Cert        []byte     `json:"cert"` // pb.Signed node certificate
	Created     time.Time  `json:"created"`
	Incarnation uint64     `json:"incarnation"` // last used; the next start uses a larger one
	Config      nodeConfig `json:"config"`
}

type knownRecord struct {
	Identity IdentityID `json:"identity"`
	Name     string     `json:"name"`
	Location string     `json:"location"`
	Version  string     `json:"version"`
	LastSeen time.Time  `json:"last_seen"`
}

type bootRecord struct {
	Name string `json:"name"`
}

func putJSON(db *store.DB, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Set(key, b)
}
