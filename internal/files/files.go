// Package files is the file service of a node: files kept in the node's
// blob store (content-addressed, chunked, encrypted at rest), holders
// discovered through signed announcements, and transfers on data
// connections from every holder at once, each chunk verified before it is
// stored.
//
// A file's id is the root of its blob: the BLAKE3 hash of its manifest
// (package blob), which lists the BLAKE3 hash of every chunk. The service
// imports plain files with a zero manifest nonce (blob.WithNonce; files
// restricted to readers carry another, see access.go): the nonce is only
// carried (the store encrypts each blob file under a random data key of
// its own, whatever the nonce), and a nonce derived from the content
// would add nothing the chunk hashes do not already fix, so zero makes
// the root a function of the content alone and the same content gives
// the same id on every node. File packets of pipelines import with random
// nonces and their own transform, so their blobs never share a root with
// the service's files.
//
// Goroutines (docs/architecture.md, "Files"): the announcer, the
// reader-key publisher (readkey.go), the listener's accept loop, one per
// connection served (with a read-ahead of the chunks it answers), and,
// during a Fetch, one worker per holder with a goroutine that stores what
// it reads; all end when the service closes.
//
// Files restricted to readers (access.go) are blobs of their ciphertext,
// marked by their manifest nonce: the service keeps, announces, serves
// and fetches them like any file, and only Open, Stat and List look into
// them.
package files

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/dispatch"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/service"
)

// Errors callers branch on.
var (
	// ErrNotFound: this node has no such file, and no holder is known.
	ErrNotFound = errors.New("files: not found")
	// ErrIsDir: Add of a directory.
	ErrIsDir = errors.New("files: is a directory")
	// ErrNoSource: the holders known could not deliver the whole file.
	ErrNoSource = errors.New("files: no holder could deliver the file")
	// ErrBadData: a holder sent data that does not match the file's
	// manifest.
	ErrBadData = errors.New("files: data does not match the file")
	// ErrIncomplete: a read of a part not fetched, with no fetch of it in
	// progress.
	ErrIncomplete = errors.New("files: that part of the file is not here")
	// ErrBusy: the file is being fetched (Remove waits for no fetch).
	ErrBusy = errors.New("files: a fetch of the file is in progress")
	// ErrClosed: the service is closed or not started.
	ErrClosed = errors.New("files: service closed")
	// ErrTooLarge: a reader of unknown size is longer than
	// MaxUnsizedReader.
	ErrTooLarge = errors.New("files: too large")
	// ErrNoSecret: Open of a file whose readers do not include this
	// node's identity (the node may hold its ciphertext).
	ErrNoSecret = errors.New("files: this node's identity is not a reader of the file")
	// ErrInvalid: an argument out of its range.
	ErrInvalid = errors.New("files: invalid argument")
	// ErrTooFewNodes: fewer nodes than a placement needs.
	ErrTooFewNodes = errors.New("files: too few nodes")
)

// Config configures the service; zero values take the defaults.
type Config struct {
	// AnnounceDelay is how long a change of holdings waits before it is
	// announced, so that a burst of changes makes one announcement
	// (default 500ms).
	AnnounceDelay time.Duration
	// AnnounceEvery is the period of re-announcement (default 3 min).
	AnnounceEvery time.Duration
	// ForgetAfter is how long a node that went offline stays in the
	// holders index (default 10 min).
	ForgetAfter time.Duration
	// RepairAfter is how long a holder may be offline before the network
	// counts its copies lost and repairs them (default 10 min): a restart
	// is not a loss, a long absence is.
	RepairAfter time.Duration
	Logger      *slog.Logger

	// ReadKey is the read key of the node's identity (DeriveReadKey):
	// with it the node opens the restricted files sealed to its identity
	// and publishes the key's public half. Nil: the node publishes nothing
	// and gets ErrNoSecret from every restricted file.
	ReadKey *ReadKey
	// ReadKeyEvery is the period of the read key's publication (default
	// 10 min).
	ReadKeyEvery time.Duration
	// KeyBookSize is the most reader keys of other identities kept
	// (default 4096).
	KeyBookSize int
}

// Hooks let tests watch and disturb transfers. Their functions run on the
// service's goroutines, under no lock.
type Hooks struct {
	// ServeChunk is called before this node serves chunk index of a file;
	// it may block (the serving connection waits).
	ServeChunk func(index int)
	// Corrupt makes this node serve every chunk with a byte changed.
	Corrupt bool
	// Requested is called when a fetch asks holder for chunk index.
	Requested func(holder ids.Node, index int)
	// Dropped is called when a fetch drops holder for bad data.
	Dropped func(holder ids.Node)
	// Served is called with each chunk's bytes as this node serves them
	// (data must not be kept: copy it).
	Served func(index int, data []byte)
}

// Stats count what the service did.
type Stats struct {
	Served    uint64 // chunks served to others
	BadChunks uint64 // chunks received that did not verify
	Dropped   uint64 // holders dropped from a fetch for bad data
	Index     IndexStats
}

// Info describes a file.
type Info struct {
	ID      ids.Content
	Name    string
	Size    int64
	Local   bool       // complete on this node
	Holders []ids.Node // the nodes known to hold it complete, this one included

	// Readers are the identities that can read it (nil: every node of the
	// network); Readable is whether this node can.
	Readers  []ids.Identity
	Readable bool
	// Copies is the replication duty of the file (0: none).
	Copies int
	// Archive describes the file's erasure-coded archive, if it has one.
	Archive *ArchiveInfo
}

// ArchiveInfo describes an erasure-coded archive of a file: Data+Parity
// shards, any Data of which restore it.
type ArchiveInfo struct {
	Data, Parity int
	Compressed   bool // the content was compressed (zstd) before sharding
	Shards       []ShardInfo
}

// ShardInfo describes one shard of an archive.
type ShardInfo struct {
	Index   int
	ID      ids.Content
	Holders []ids.Node
}

// AddOptions are the options of Add and AddReader.
type AddOptions struct {
	// Readers, if not empty, are the only identities whose nodes can read
	// the file: its content is encrypted under a key sealed to each.
	Readers []ids.Identity
}

// record is what the service stores of a file this node keeps: key
// "f" | id, value flags (1 byte: bit 0 complete, bit 1 taken for a duty,
// bit 2 temporary) | name.
type record struct {
	name     string
	size     int64
	complete bool
	duty     bool // the copy was taken for a duty: the service may release it
	temp     bool // a shard fetched for a restore or a rebuild: not announced
}

const (
	recComplete byte = 1
	recDuty     byte = 2
	recTemp     byte = 4
)

func recordKey(id ids.Content) []byte { return append([]byte("f"), id[:]...) }

// Service is the file service.
type Service struct {
	cfg Config
	log *slog.Logger
	idx *index

	network atomic.Pointer[ids.Network] // set by Start: announcements are checked against it
	hooks   atomic.Pointer[Hooks]
	auth    atomic.Pointer[authorizer] // SetAuthorizer: blobs served besides the files (blobs.go)
	up      chan struct{}              // closed by Start (FetchBlob waits for it)

	host  service.Host
	blobs *blob.Store
	ns    service.Namespace
	ln    net.Listener
	stopP func()

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	changed  chan struct{} // holdings changed: announce (after AnnounceDelay)
	onlineCh chan ids.Node // nodes that came online: send them the announcement
	rep      *replicator   // duties: replication, archives, repair

	mu      sync.Mutex
	started bool
	closed  bool
	files   map[ids.Content]*record
	fetches map[ids.Content]*fetchState
	served  map[net.Conn]struct{}
	seq     uint64 // of the last announcement

	nServed, nBad, nDropped atomic.Uint64

	acc accessState // restricted files and reader keys (access.go, readkey.go)
}

// New returns a service to give the node (node.Config.Services).
func New(cfg Config) *Service {
	if cfg.AnnounceDelay <= 0 {
		cfg.AnnounceDelay = 500 * time.Millisecond
	}
	if cfg.AnnounceEvery <= 0 {
		cfg.AnnounceEvery = 3 * time.Minute
	}
	if cfg.ForgetAfter <= 0 {
		cfg.ForgetAfter = 10 * time.Minute
	}
	if cfg.RepairAfter <= 0 {
		cfg.RepairAfter = 10 * time.Minute
	}
	// A node forgotten by the index would count as lost before the
	// repair delay.
	cfg.ForgetAfter = max(cfg.ForgetAfter, cfg.RepairAfter)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadKeyEvery <= 0 {
		cfg.ReadKeyEvery = 10 * time.Minute
	}
	if cfg.KeyBookSize <= 0 {
		cfg.KeyBookSize = keyBookSize
	}
	s := &Service{cfg: cfg, log: cfg.Logger, idx: newIndex(), changed: make(chan struct{}, 1),
		onlineCh: make(chan ids.Node, 64), files: map[ids.Content]*record{},
		fetches: map[ids.Content]*fetchState{}, served: map[net.Conn]struct{}{}, up: make(chan struct{})}
	s.acc.book = keyBook{max: cfg.KeyBookSize, m: map[ids.Identity]*bookEntry{}}
	s.rep = newReplicator(cfg.RepairAfter)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// Name names the service.
func (s *Service) Name() string { return "files" }

// Register registers the holdings kind: validated (decoded and its
// signature checked) before the mesh forwards it, applied to the index
// on the service's worker.
func (s *Service) Register(r service.Registrar) error {
	g, err := r.Group("file-holdings", dispatch.GroupConfig{Queue: 256})
	if err != nil {
		return err
	}
	if err := g.Handle(kinds.Holdings, dispatch.Route{Paths: kinds.Broadcast | kinds.Routed,
		Validate: s.validate, Handle: s.handleHoldings}); err != nil {
		return err
	}
	if err := g.Handle(kinds.Duties, dispatch.Route{Paths: kinds.Broadcast | kinds.Routed,
		Validate: s.validateDuty, Handle: s.handleDuty}); err != nil {
		return err
	}
	return s.registerReadKeys(g) // readkey.go
}

func (s *Service) validate(payload []byte, origin ids.Node) (any, error) {
	nw := s.network.Load()
	if nw == nil {
		return nil, ErrClosed
	}
	h, err := decodeHoldings(payload, *nw, origin)
	if err != nil {
		s.idx.refused(err)
		return nil, err
	}
	return h, nil
}

func (s *Service) handleHoldings(m dispatch.Msg) error {
	h, ok := m.Body.(*holdings)
	if !ok { // routed: not validated yet
		v, err := s.validate(m.Payload, m.From)
		if err != nil {
			return err
		}
		h = v.(*holdings)
	}
	if h.node == s.host.Self() {
		return nil
	}
	if s.idx.apply(h) {
		s.rep.poke()
	}
	return nil
}

// Start loads the records of the files this node keeps, listens for
// transfers and starts announcing.
func (s *Service) Start(_ context.Context, h service.Host) error {
	blobs, err := h.Blobs()
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	s.host, s.blobs, s.ns = h, blobs, h.Store()
	removeScratch(blobs.Dir()) // left by a crash: their key is gone with it
	if err := s.load(); err != nil {
		return err
	}
	nw := h.Keys().Cert.NetworkID
	if err := s.loadDuties(nw); err != nil {
		return err
	}
	if s.ln, err = h.Listen(ServiceName); err != nil {
		return fmt.Errorf("files: %w", err)
	}
	s.network.Store(&nw)
	s.stopP = h.Presence(func(e service.PresenceEvent) {
		s.idx.presence(e.Node, e.Online, time.Now())
		s.rep.presence(e)
		if e.Online {
			select {
			case s.onlineCh <- e.Node:
			default: // the periodic announcement reaches it
			}
		}
	})
	if err := s.startAccess(h); err != nil { // readkey.go
		s.stopP()
		s.ln.Close()
		return err
	}
	s.mu.Lock()
	s.started = true
	s.wg.Add(3)
	close(s.up)
	s.mu.Unlock()
	go func() { defer s.wg.Done(); s.accept() }()
	go func() { defer s.wg.Done(); s.announcer() }()
	go func() { defer s.wg.Done(); s.dutyLoop() }()
	s.touch()
	return nil
}

// load reads the records; a record whose blob is gone is deleted.
func (s *Service) load() error {
	var gone []ids.Content
	err := s.ns.Scan([]byte("f"), func(k, v []byte) error {
		if len(k) != 33 || len(v) < 1 {
			return nil
		}
		id := ids.Content(k[1:])
		m, err := s.blobs.Manifest(id)
		if err != nil {
			gone = append(gone, id)
			return nil
		}
		s.files[id] = &record{name: string(v[1:]), size: m.Size, complete: v[0]&recComplete != 0,
			duty: v[0]&recDuty != 0, temp: v[0]&recTemp != 0}
		return nil
	})
	if err != nil {
		return fmt.Errorf("files: reading the records: %w", err)
	}
	for _, id := range gone {
		s.ns.Delete(recordKey(id))
	}
	return nil
}

// save stores r as the record of id and keeps it.
func (s *Service) save(id ids.Content, r *record) error {
	v := []byte{0}
	if r.complete {
		v[0] |= recComplete
	}
	if r.duty {
		v[0] |= recDuty
	}
	if r.temp {
		v[0] |= recTemp
	}
	if err := s.ns.Set(recordKey(id), append(v, r.name...)); err != nil {
		return fmt.Errorf("files: storing the record: %w", err)
	}
	s.mu.Lock()
	s.files[id] = r
	s.mu.Unlock()
	if r.complete {
		s.touch()
		s.rep.poke()
	}
	return nil
}

// Close stops the service's goroutines and waits for them, and for the
// fetches in progress, which end with ErrClosed.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	started := s.started
	conns := make([]net.Conn, 0, len(s.served))
	for c := range s.served {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	if started {
		s.stopP()
		s.stopAccess()
		s.ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// enter counts a caller's goroutine into the service's (Close waits for
// it), or fails if the service is closed or not started.
func (s *Service) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.started {
		return ErrClosed
	}
	s.wg.Add(1)
	return nil
}

// SetHooks sets the test hooks.
func (s *Service) SetHooks(h Hooks) { s.hooks.Store(&h) }

func (s *Service) hook() Hooks {
	if h := s.hooks.Load(); h != nil {
		return *h
	}
	return Hooks{}
}

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	return Stats{Served: s.nServed.Load(), BadChunks: s.nBad.Load(), Dropped: s.nDropped.Load(), Index: s.idx.stats()}
}

// holdings returns the ids of the files this node keeps complete, in id
// order.
func (s *Service) holdings() []ids.Content {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ids.Content
	for id, r := range s.files {
		if r.complete && !r.temp {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b ids.Content) int { return compareIDs(a, b) })
	return out
}

func compareIDs(a, b ids.Content) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// touch says the holdings changed.
func (s *Service) touch() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// announcement signs the current holdings with the next sequence.
func (s *Service) announcement() []byte {
	files := s.holdings()
	s.mu.Lock()
	s.seq = max(uint64(time.Now().UnixNano()), s.seq+1)
	seq := s.seq
	s.mu.Unlock()
	k := s.host.Keys()
	return encodeHoldings(k.Node, k.Cert.NetworkID, seq, files)
}

// announcer broadcasts the holdings AnnounceDelay after a change and
// every AnnounceEvery, sends them to nodes that come online, and forgets
// the nodes offline for longer than ForgetAfter.
func (s *Service) announcer() {
	every := time.NewTicker(s.cfg.AnnounceEvery)
	defer every.Stop()
	expire := time.NewTicker(min(s.cfg.ForgetAfter/2, time.Minute))
	defer expire.Stop()
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	defer delay.Stop()
	pending := false
	var last []byte
	send := func() {
		last = s.announcement()
		if err := s.host.Broadcast(s.ctx, kinds.Holdings, last); err != nil {
			s.log.Debug("announcing the files held", "err", err)
		}
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.changed:
			if !pending {
				pending = true
				delay.Reset(s.cfg.AnnounceDelay)
			}
		case <-delay.C:
			pending = false
			send()
		case <-every.C:
			send()
		case n := <-s.onlineCh:
			if last == nil {
				continue // nothing announced yet: the first broadcast reaches it
			}
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			err := s.host.Send(ctx, n, kinds.Holdings, last)
			cancel()
			if err != nil {
				s.log.Debug("sending the files held", "to", n.Short(), "err", err)
			}
		case now := <-expire.C:
			s.idx.expire(now, s.cfg.ForgetAfter)
		}
	}
}
