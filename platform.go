package pipes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/netfile"
	"github.com/pipesnet/pipes/internal/store"
)

// version is the software version nodes announce.
const version = "0.1.0"

// Platform is an open data directory: the identities, networks and nodes
// configured in it. Only one Platform may have a directory open at a time.
// All methods are safe for concurrent use.
type Platform struct {
	dir  string
	db   *store.DB
	log  *slog.Logger
	opts platformOptions

	mu struct {
		sync.Mutex
		closed     bool
		identities map[IdentityID]*Identity
		networks   map[NetworkID]*Network
		nodes      map[NodeID]*Node
	}
}

// Open opens (creating if needed) the data directory dir and returns its
// Platform. An empty dir means DefaultHome(). A second Open of the same
// directory, from this process or another, fails with ErrLocked until the
// first is closed.
func Open(dir string, opts ...Option) (*Platform, error) {
	var o platformOptions
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		dir = DefaultHome()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, mapErr(err, "")
	}
	log := o.logger
	if log == nil {
		level := slog.LevelWarn
		if debugEnv() {
			level = slog.LevelDebug
		}
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	if o.logTag != "" {
		log = log.With("tag", o.logTag)
	}
	db, err := store.Open(dir, store.Options{Logger: log, MinFreeBytes: o.reserve})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		if errors.Is(err, store.ErrCorrupt) {
			return nil, fmt.Errorf("%w: %w", ErrStore, err)
		}
		return nil, fmt.Errorf("pipes: open %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		db.Close()
		return nil, mapErr(err, "")
	}
	p := &Platform{dir: dir, db: db, log: log, opts: o}
	if err := p.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("pipes: open %s: %w", dir, err)
	}
	return p, nil
}

// load reads every identity, network and node record.
func (p *Platform) load() error {
	p.mu.identities = map[IdentityID]*Identity{}
	p.mu.networks = map[NetworkID]*Network{}
	p.mu.nodes = map[NodeID]*Node{}
	err := p.db.Scan([]byte{tIdentity}, func(k, v []byte) error {
		var r identityRecord
		if len(k) != 33 || json.Unmarshal(v, &r) != nil {
			return fmt.Errorf("store: bad identity record %x", k)
		}
		id := IdentityID(k[1:])
		p.mu.identities[id] = &Identity{p: p, id: id, rec: r}
		return nil
	})
	if err != nil {
		return err
	}
	err = p.db.Scan([]byte{tNetwork}, func(k, v []byte) error {
		var r networkRecord
		if len(k) != 33 || json.Unmarshal(v, &r) != nil {
			return fmt.Errorf("store: bad network record %x", k)
		}
		nf, err := netfile.Parse(r.Netfile)
		if err != nil {
			return fmt.Errorf("store: network %x: %w", k[1:], err)
		}
		id := NetworkID(k[1:])
		p.mu.networks[id] = &Network{p: p, id: id, nf: nf, rec: r}
		return nil
	})
	if err != nil {
		return err
	}
	return p.db.Scan([]byte{tNode}, func(k, v []byte) error {
		var r nodeRecord
		if len(k) != 33 || json.Unmarshal(v, &r) != nil {
			return fmt.Errorf("store: bad node record %x", k)
		}
		id := NodeID(k[1:])
		n, err := p.newNode(id, r)
		if err != nil {
			return err
		}
		p.mu.nodes[id] = n
		return nil
	})
}

// Dir returns the platform's data directory.
func (p *Platform) Dir() string { return p.dir }

// Version returns the version of the Pipes software.
func (p *Platform) Version() string { return version }

// Close stops every node, flushes and closes the store and releases the
// directory. It is idempotent.
func (p *Platform) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	nodes := p.nodesLocked()
	p.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.db.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (p *Platform) checkOpen() error {
	if p.mu.closed {
		return ErrClosed
	}
	return nil
}

func (p *Platform) keyPath(kind string, id [32]byte) string {
	return filepath.Join(p.dir, "keys", fmt.Sprintf("%s-%x.key", kind, id))
}

// HasLocalIdentity reports whether the platform has an identity.
func (p *Platform) HasLocalIdentity() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.identities) > 0
}

// LocalIdentity returns the platform's identity: the only one, or the
// oldest when there are several. ErrNoIdentity if there is none.
func (p *Platform) LocalIdentity() (*Identity, error) {
	ids := p.Identities()
	if len(ids) == 0 {
		return nil, ErrNoIdentity
	}
	return ids[0], nil
}

// Identity returns the identity with id.
func (p *Platform) Identity(id IdentityID) (*Identity, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.mu.identities[id]; i != nil {
		return i, nil
	}
	return nil, fmt.Errorf("%w: identity %s", ErrNotFound, id)
}

// Identities returns every identity, oldest first.
func (p *Platform) Identities() []*Identity {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Identity, 0, len(p.mu.identities))
	for _, i := range p.mu.identities {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b *Identity) int {
		if c := a.rec.Created.Compare(b.rec.Created); c != 0 {
			return c
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
	return out
}

// AddIdentity creates an identity with a new Ed25519 key. The private key
// is written to keys/identity-<id>.key with mode 0600.
func (p *Platform) AddIdentity(name string) (*Identity, error) {
	if name == "" || len(name) > identity.MaxNameLen {
		return nil, fmt.Errorf("pipes: identity name must be 1 to %d bytes", identity.MaxNameLen)
	}
	key, err := identity.Generate()
	if err != nil {
		return nil, mapErr(err, "")
	}
	id := IdentityID(key.ID())
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkOpen(); err != nil {
		return nil, err
	}
	if err := identity.SaveKey(p.keyPath("identity", id), key); err != nil {
		return nil, mapErr(err, "")
	}
	rec := identityRecord{Name: name, Public: key.Public, Created: time.Now().UTC()}
	if err := putJSON(p.db, store.Key(tIdentity, id[:]), rec); err != nil {
		return nil, mapErr(err, "")
	}
	i := &Identity{p: p, id: id, rec: rec}
	p.mu.identities[id] = i
	return i, nil
}

// Identity is a named Ed25519 key pair. Nodes run as an identity: the
// identity signs each node's certificate, so one identity may have many
// nodes (devices).
type Identity struct {
	p   *Platform
	id  IdentityID
	rec identityRecord
}

// ID returns the identity's id (SHA-256 of its public key).
func (i *Identity) ID() IdentityID { return i.id }

// Name returns the identity's name, shown to other nodes.
func (i *Identity) Name() string { return i.rec.Name }

func (i *Identity) key() (*identity.KeyPair, error) {
	return identity.LoadKey(i.p.keyPath("identity", i.id))
}
