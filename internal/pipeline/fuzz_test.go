package pipeline

import (
	"crypto/rand"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/protobuf/proto"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/kinds"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// FuzzNotesAndFiles feeds arbitrary pipeline notes, messages of the
// retired file kinds (FileGet, FileData: refused, no handler), and sealed
// bodies to an engine with a persistent pipeline and files, as routed
// messages and as what a sealed message holds: nothing may panic.
func FuzzNotesAndFiles(f *testing.F) {
	e, d, ident := persistentEngineWithFiles(f)
	okey, _ := identity.Generate()
	ocert, _ := identity.IssueCert(ident, "o", okey.Public, testNet, "", time.Now())
	src := ocert.NodeID()
	notes, _ := proto.Marshal(&pb.PipelineNotes{
		Proofs:     []*pb.SecretProof{{Pipeline: d.ID[:], Node: src[:], Signature: make([]byte, 64)}},
		Tombstones: []*pb.Tombstone{{Pipeline: d.ID[:], TimeMs: time.Now().UnixMilli(), Node: src[:]}},
	})
	get, _ := proto.Marshal(&pb.FileGet{Root: make([]byte, 32), Pipeline: d.ID[:], Index: 3})
	data, _ := proto.Marshal(&pb.FileData{Root: make([]byte, 32), Index: 1, Data: []byte("chunk")})
	var key [32]byte
	rand.Read(key[:])
	id := rtKeyID(src, key)
	now := time.Now().UnixMilli()
	rk, _ := proto.Marshal(&pb.SealedBody{Body: &pb.SealedBody_RealtimeKey{RealtimeKey: &pb.RealtimeKey{
		KeyId: id[:], Key: key[:], NodeCert: ocert.Signed, TimeMs: now,
		Signature: identity.Sign(okey, rtKeyContext, rtKeyMessage(id, key[:], e.self, now, 0))}}})
	for _, seed := range []struct {
		kind uint32
		b    []byte
	}{{kinds.Notes, notes}, {kinds.FileGet, get}, {kinds.FileData, data}, {0, rk}} {
		f.Add(seed.kind, seed.b)
	}
	f.Fuzz(func(t *testing.T, kind uint32, b []byte) {
		switch kind % 4 {
		case 0: // what a Sealed message from src holds
			var body pb.SealedBody
			if proto.Unmarshal(b, &body) != nil {
				return
			}
			switch m := body.Body.(type) {
			case *pb.SealedBody_RealtimeKey:
				e.rt.acceptKey(src, m.RealtimeKey)
			case *pb.SealedBody_Notes:
				if m.Notes != nil {
					if n, err := parseNotes(mustMarshal(m.Notes)); err == nil {
						e.notes.handle(src, n, true)
					}
				}
			}
		default:
			e.handleRouted(routedMsg{src: src, kind: []uint32{0, kinds.Notes, kinds.FileGet, kinds.FileData}[kind%4], payload: b})
		}
	})
}

// FuzzDatagram feeds arbitrary datagrams to an engine that has a realtime
// session open, with seeds that open under it: nothing may panic.
func FuzzDatagram(f *testing.F) {
	e, _, ident := persistentEngine(f)
	okey, _ := identity.Generate()
	ocert, _ := identity.IssueCert(ident, "o", okey.Public, testNet, "", time.Now())
	src := ocert.NodeID()
	var key [32]byte
	rand.Read(key[:])
	id := rtKeyID(src, key)
	now := time.Now().UnixMilli()
	err := e.rt.acceptKey(src, &pb.RealtimeKey{KeyId: id[:], Key: key[:], NodeCert: ocert.Signed, TimeMs: now,
		Signature: identity.Sign(okey, rtKeyContext, rtKeyMessage(id, key[:], e.self, now, 0))})
	if err != nil {
		f.Fatal(err)
	}
	a, _ := chacha20poly1305.New(key[:])
	for c := uint64(1); c <= 3; c++ {
		inner := binary.BigEndian.AppendUint64(make([]byte, 8), c)
		inner = binary.BigEndian.AppendUint64(inner, uint64(now))
		inner = binary.AppendVarint(inner, 1)
		inner = append(inner, "voice"...)
		out := append(append([]byte{}, id[:]...), binary.BigEndian.AppendUint64(nil, c)...)
		f.Add(a.Seal(out, rtNonce(c), inner, id[:]))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e.rt.openDatagram(b)
	})
}
