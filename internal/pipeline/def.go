package pipeline

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// Options choose the kind of pipeline (the facade's PipelineOptions).
type Options struct {
	ToNode     ids.Node // non-zero: point-to-point with that node
	Persistent bool
	Encrypted  bool
	Ephemeral  bool
	Realtime   bool
	Unsalted   bool
	Salt       []byte
}

// Def is a pipeline definition. Its ID is derived from the other fields.
type Def struct {
	ID        ids.Pipeline
	Name      string
	Opts      Options  // ToNode is relative to the local node
	A, B      ids.Node // point-to-point pair, A < B; zero for broadcast
	Creator   ids.Node
	SecretKey []byte // encrypted: public key derived from the secret (part of the id)
	Created   int64  // unix milliseconds of creation (ephemeral pipelines; not part of the id)
}

// Limits of definitions.
const (
	MaxNameLen = 256
	maxSalt    = 64
)

// ErrConflict: a pipeline of that name exists with other options.
var ErrConflict = errors.New("pipeline: a pipeline of that name exists with other options")

// IsPointToPoint reports whether the pipeline joins two nodes only.
func (d *Def) IsPointToPoint() bool { return d.A != ids.Node{} }

// other returns the other node of a point-to-point pipeline, seen from self.
func (d *Def) other(self ids.Node) ids.Node {
	if d.A == self {
		return d.B
	}
	return d.A
}

// computeID hashes everything that defines the pipeline, in a fixed
// layout: "pipes/v1 pipeline" || network || u16 len || name || flags byte
// || u8 len || salt || A || B, then for an encrypted pipeline its 32-byte
// secret key.
func computeID(network ids.Network, name string, o Options, a, b ids.Node, secretKey []byte) ids.Pipeline {
	h := sha256.New()
	h.Write([]byte("pipes/v1 pipeline"))
	h.Write(network[:])
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(name)))
	h.Write(n[:])
	h.Write([]byte(name))
	var flags byte
	for i, f := range []bool{o.Persistent, o.Encrypted, o.Ephemeral, o.Realtime, o.Unsalted} {
		if f {
			flags |= 1 << i
		}
	}
	h.Write([]byte{flags, byte(len(o.Salt))})
	h.Write(o.Salt)
	h.Write(a[:])
	h.Write(b[:])
	h.Write(secretKey)
	var id ids.Pipeline
	h.Sum(id[:0])
	return id
}

// Errors of definitions.
var (
	ErrRealtimePersistent = errors.New("pipeline: a realtime pipeline is live only; it cannot be persistent")
	ErrSecretRequired     = errors.New("pipeline: an encrypted pipeline needs a secret")
)

// newDef makes the definition of a pipeline created by self. An encrypted
// pipeline needs its secret, from which the key is derived (slow: Argon2id)
// and returned.
func newDef(network ids.Network, self ids.Node, name string, o Options, secret []byte) (*Def, *pipeKey, error) {
	if name == "" || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return nil, nil, fmt.Errorf("pipeline: name must be 1 to %d bytes of UTF-8", MaxNameLen)
	}
	if len(o.Salt) > maxSalt {
		return nil, nil, fmt.Errorf("pipeline: salt longer than %d bytes", maxSalt)
	}
	if o.Realtime && o.Persistent {
		return nil, nil, ErrRealtimePersistent
	}
	if (o.Unsalted || len(o.Salt) > 0) && !o.Encrypted {
		return nil, nil, errors.New("pipeline: Salt and Unsalted apply to encrypted pipelines only")
	}
	if o.Unsalted && len(o.Salt) > 0 {
		return nil, nil, errors.New("pipeline: a pipeline cannot be both Unsalted and have a Salt")
	}
	if o.Encrypted && len(secret) == 0 {
		return nil, nil, ErrSecretRequired
	}
	if !o.Encrypted && len(secret) > 0 {
		return nil, nil, errors.New("pipeline: a secret is for encrypted pipelines only")
	}
	d := &Def{Name: name, Opts: o, Creator: self}
	if o.Ephemeral {
		d.Created = time.Now().UnixMilli()
	}
	if !o.ToNode.IsZero() {
		if o.ToNode == self {
			return nil, nil, errors.New("pipeline: a point-to-point pipeline needs another node")
		}
		d.A, d.B = self, o.ToNode
		if bytes.Compare(d.A[:], d.B[:]) > 0 {
			d.A, d.B = d.B, d.A
		}
	}
	var key *pipeKey
	if o.Encrypted {
		key = deriveSecret(secret, pipelineSalt(computeID(network, name, o, d.A, d.B, nil), o))
		d.SecretKey = key.public()
	}
	d.ID = computeID(network, name, o, d.A, d.B, d.SecretKey)
	return d, key, nil
}

// keyFor derives the key a secret gives for d; it reports false if the
// secret is not d's.
func (d *Def) keyFor(network ids.Network, secret []byte) (*pipeKey, bool) {
	if !d.Opts.Encrypted {
		return nil, false
	}
	k := deriveSecret(secret, pipelineSalt(computeID(network, d.Name, d.Opts, d.A, d.B, nil), d.Opts))
	return k, bytes.Equal(k.public(), d.SecretKey)
}

// sameKind reports whether d and o define the same pipeline.
func (d *Def) sameKind(o *Def) bool { return d.ID == o.ID }

func (d *Def) toProto() *pb.PipelineDef {
	m := &pb.PipelineDef{
		Id: d.ID[:], Name: d.Name, Persistent: d.Opts.Persistent, Encrypted: d.Opts.Encrypted,
		Ephemeral: d.Opts.Ephemeral, Realtime: d.Opts.Realtime, Unsalted: d.Opts.Unsalted,
		Salt: d.Opts.Salt, Creator: d.Creator[:], CreatedMs: d.Created, SecretKey: d.SecretKey,
	}
	if d.IsPointToPoint() {
		m.NodeA, m.NodeB = d.A[:], d.B[:]
	}
	return m
}

// defFromProto checks a received definition: sizes, and that its id is the
// hash of its fields. self fills in ToNode for a point-to-point pipeline
// and must be one of its pair.
func defFromProto(network ids.Network, self ids.Node, m *pb.PipelineDef) (*Def, error) {
	if m == nil || len(m.Id) != 32 || len(m.Creator) != 32 || m.Name == "" || len(m.Name) > MaxNameLen ||
		!utf8.ValidString(m.Name) || len(m.Salt) > maxSalt || m.CreatedMs < 0 {
		return nil, errors.New("pipeline: malformed definition")
	}
	if m.CreatedMs > time.Now().Add(maxFuture).UnixMilli() {
		return nil, errors.New("pipeline: definition created in the future")
	}
	if m.Encrypted != (len(m.SecretKey) == ed25519.PublicKeySize) || (!m.Encrypted && len(m.SecretKey) != 0) {
		return nil, errors.New("pipeline: malformed secret key")
	}
	if (m.Unsalted || len(m.Salt) > 0) && !m.Encrypted || m.Unsalted && len(m.Salt) > 0 || m.Realtime && m.Persistent {
		return nil, errors.New("pipeline: definition with options that exclude each other")
	}
	d := &Def{Name: m.Name, Creator: ids.Node(m.Creator), SecretKey: bytes.Clone(m.SecretKey), Created: m.CreatedMs, Opts: Options{
		Persistent: m.Persistent, Encrypted: m.Encrypted, Ephemeral: m.Ephemeral,
		Realtime: m.Realtime, Unsalted: m.Unsalted, Salt: bytes.Clone(m.Salt)}}
	if len(m.NodeA) != 0 || len(m.NodeB) != 0 {
		if len(m.NodeA) != 32 || len(m.NodeB) != 32 || bytes.Compare(m.NodeA, m.NodeB) >= 0 {
			return nil, errors.New("pipeline: malformed point-to-point pair")
		}
		d.A, d.B = ids.Node(m.NodeA), ids.Node(m.NodeB)
		if d.A != self && d.B != self {
			return nil, errors.New("pipeline: point-to-point definition for other nodes")
		}
		d.Opts.ToNode = d.other(self)
	}
	if computeID(network, d.Name, d.Opts, d.A, d.B, d.SecretKey) != ids.Pipeline(m.Id) {
		return nil, errors.New("pipeline: definition id does not match its fields")
	}
	d.ID = ids.Pipeline(m.Id)
	return d, nil
}
