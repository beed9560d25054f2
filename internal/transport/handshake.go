package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/wire"
	"github.com/pipesnet/pipes/internal/wire/pb"
)

// ProtocolVersion is the version this node speaks in Hello.
const ProtocolVersion = 1

// exporterLabel is the TLS exporter label of the membership proof. The
// exporter value is unique to one TLS session, which binds the proof to this
// connection: a proof seen on one connection is worthless on another.
const exporterLabel = "EXPORTER-pipes-membership-v1"

// Close codes sent in QUIC CONNECTION_CLOSE frames.
const (
	CodeNormal    quic.ApplicationErrorCode = 0 // orderly close (shutdown)
	CodeRefused   quic.ApplicationErrorCode = 1 // membership proof or certificate failed
	CodeDuplicate quic.ApplicationErrorCode = 2 // another connection to the same peer is kept
	CodeProtocol  quic.ApplicationErrorCode = 3 // malformed or unexpected message
	CodeFull      quic.ApplicationErrorCode = 4 // the node has enough peers
	CodeSelf      quic.ApplicationErrorCode = 5 // the node dialled itself
)

// RefusedError is the error of a handshake that the local side refused. The
// connection was closed with CodeRefused and Reason, so the peer learns why.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "refused peer: " + e.Reason }

// ErrRefusedByPeer wraps the reason the remote side gave for refusing us.
var ErrRefusedByPeer = errors.New("refused by peer")

// membershipProof is HMAC-SHA256(network key, exporter || node id).
func membershipProof(networkKey [32]byte, exporter []byte, nodeID ids.Node) []byte {
	m := hmac.New(sha256.New, networkKey[:])
	m.Write(exporter)
	m.Write(nodeID[:])
	return m.Sum(nil)
}

// handshake runs the membership exchange on the first stream. The dialer
// speaks first and proves membership before either side reveals anything
// beyond the public key already seen in TLS:
//
//	dialer   -> acceptor: Hello{version, network id, proof}
//	acceptor -> dialer:   Hello{full: proof, node certificate, incarnation, addrs}
//	dialer   -> acceptor: Hello{full}
//	acceptor -> dialer:   Verdict{ok}
//
// Each side checks the proof against the node id of the key TLS
// authenticated; a failure closes the connection with CodeRefused and the
// reason. The control stream then carries Frames.
func (t *Transport) handshake(ctx context.Context, qc *quic.Conn, outbound bool) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	state := qc.ConnectionState().TLS
	if len(state.PeerCertificates) != 1 {
		return nil, t.refuse(qc, "no peer certificate")
	}
	peerPub, ok := state.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, t.refuse(qc, "peer key is not Ed25519")
	}
	peerID := ids.Node(sha256.Sum256(peerPub))
	myID := ids.Node(t.cfg.Cert.NodeID())
	if peerID == myID {
		qc.CloseWithError(CodeSelf, "dialled itself")
		return nil, ErrSelf
	}
	exporter, err := state.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		return nil, t.refuse(qc, "no TLS exporter")
	}
	mine := &pb.Hello{
		ProtocolVersion: ProtocolVersion,
		NetworkId:       t.cfg.NetworkID[:],
		Proof:           membershipProof(t.cfg.NetworkKey, exporter, myID),
	}
	full := &pb.Hello{
		ProtocolVersion: ProtocolVersion,
		NetworkId:       t.cfg.NetworkID[:],
		NodeCert:        t.cfg.Cert.Signed,
		Proof:           mine.Proof,
		Incarnation:     t.cfg.Incarnation,
		ListenAddrs:     t.cfg.ListenAddrs(t.Addr()),
		ObservedAddr:    qc.RemoteAddr().String(),
	}

	var st *quic.Stream
	if outbound {
		st, err = qc.OpenStreamSync(ctx)
	} else {
		st, err = qc.AcceptStream(ctx)
	}
	if err != nil {
		return nil, t.closeErr(qc, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	r := bufio.NewReader(st)
	read := func(m *pb.Hello) error {
		if err := wire.ReadMsg(r, m, wire.MaxHandshakeSize); err != nil {
			return t.closeErr(qc, err)
		}
		return nil
	}
	c := &Conn{qc: qc, ctl: st, r: r, Outbound: outbound, PeerID: peerID}
	if outbound {
		if err := wire.WriteMsg(st, mine); err != nil {
			return nil, t.closeErr(qc, err)
		}
		var theirs pb.Hello
		if err := read(&theirs); err != nil {
			return nil, err
		}
		if err := t.checkHello(qc, &theirs, peerID, peerPub, exporter, c); err != nil {
			return nil, err
		}
		if err := wire.WriteMsg(st, full); err != nil {
			return nil, t.closeErr(qc, err)
		}
		var v pb.Verdict
		if err := wire.ReadMsg(r, &v, wire.MaxHandshakeSize); err != nil {
			return nil, t.closeErr(qc, err)
		}
		if !v.Ok {
			return nil, fmt.Errorf("%w: %s", ErrRefusedByPeer, v.Reason)
		}
	} else {
		var first pb.Hello
		if err := read(&first); err != nil {
			return nil, err
		}
		if err := t.checkProof(qc, &first, peerID, exporter); err != nil {
			return nil, err
		}
		if err := wire.WriteMsg(st, full); err != nil {
			return nil, t.closeErr(qc, err)
		}
		var second pb.Hello
		if err := read(&second); err != nil {
			return nil, err
		}
		if !bytes.Equal(second.Proof, first.Proof) {
			return nil, t.refuse(qc, "proof changed during handshake")
		}
		if err := t.checkHello(qc, &second, peerID, peerPub, exporter, c); err != nil {
			return nil, err
		}
		if err := wire.WriteMsg(st, &pb.Verdict{Ok: true}); err != nil {
			return nil, t.closeErr(qc, err)
		}
	}
	st.SetDeadline(time.Time{})
	t.live.Add(1)
	t.bytesMu.Lock()
	t.conns[qc] = struct{}{}
	t.bytesMu.Unlock()
	context.AfterFunc(qc.Context(), func() {
		t.live.Add(-1)
		s := qc.ConnectionStats()
		t.bytesMu.Lock()
		delete(t.conns, qc)
		t.closedSent += s.BytesSent
		t.closedRecv += s.BytesReceived
		t.bytesMu.Unlock()
	})
	return c, nil
}

// ErrSelf is returned when a node reaches its own address.
var ErrSelf = errors.New("transport: connected to self")

// checkProof verifies version, network and the membership proof of a Hello.
func (t *Transport) checkProof(qc *quic.Conn, h *pb.Hello, peerID ids.Node, exporter []byte) error {
	if reason := verifyProof(h, peerID, exporter, t.cfg.NetworkID, t.cfg.NetworkKey); reason != "" {
		return t.refuse(qc, reason)
	}
	return nil
}

// checkHello verifies a full Hello and records what it says in c.
func (t *Transport) checkHello(qc *quic.Conn, h *pb.Hello, peerID ids.Node, peerPub ed25519.PublicKey, exporter []byte, c *Conn) error {
	cert, reason := verifyHello(h, peerID, peerPub, exporter, t.cfg.NetworkID, t.cfg.NetworkKey)
	if reason != "" {
		return t.refuse(qc, reason)
	}
	c.Peer = cert
	c.Incarnation = h.Incarnation
	c.ListenAddrs = h.ListenAddrs
	if ap, err := netip.ParseAddrPort(h.ObservedAddr); err == nil && len(h.ObservedAddr) <= 64 {
		c.Observed = Unmap(ap)
	}
	return nil
}

// verifyProof checks a Hello's version, network id and membership proof.
// It returns why the Hello is refused, or "" if it passes.
func verifyProof(h *pb.Hello, peerID ids.Node, exporter []byte, network ids.Network, key [32]byte) string {
	if h.ProtocolVersion != ProtocolVersion {
		return fmt.Sprintf("protocol version %d, want %d", h.ProtocolVersion, ProtocolVersion)
	}
	if !bytes.Equal(h.NetworkId, network[:]) {
		return fmt.Sprintf("peer is in network %x, not %x", h.NetworkId, network[:])
	}
	if !hmac.Equal(membershipProof(key, exporter, peerID), h.Proof) {
		return "membership proof does not verify (wrong network secret)"
	}
	return ""
}

// verifyHello checks a full Hello: the proof, then the node certificate,
// which must be valid, for the key TLS authenticated and for this network.
func verifyHello(h *pb.Hello, peerID ids.Node, peerPub ed25519.PublicKey, exporter []byte, network ids.Network, key [32]byte) (*identity.Cert, string) {
	if reason := verifyProof(h, peerID, exporter, network, key); reason != "" {
		return nil, reason
	}
	cert, err := identity.ParseCert(h.NodeCert)
	if err != nil {
		return nil, "bad node certificate: " + err.Error()
	}
	if !bytes.Equal(cert.NodeKey, peerPub) {
		return nil, "node certificate is for another key than the TLS one"
	}
	if cert.NetworkID != network {
		return nil, "node certificate is for another network"
	}
	if len(h.ListenAddrs) > maxAddrs {
		return nil, "too many addresses"
	}
	for _, a := range h.ListenAddrs {
		if len(a) > maxAddrLen {
			return nil, "address too long"
		}
	}
	return cert, ""
}

const maxAddrLen = 256

const maxAddrs = 32

// refuse closes qc with CodeRefused and the reason, and returns the error
// the local side logs.
func (t *Transport) refuse(qc *quic.Conn, reason string) error {
	t.refused.Add(1)
	qc.CloseWithError(CodeRefused, reason)
	return &RefusedError{Reason: reason}
}

// closeErr turns an I/O failure during the handshake into an error, using
// the peer's close reason when the peer closed the connection.
func (t *Transport) closeErr(qc *quic.Conn, err error) error {
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.Remote {
		if appErr.ErrorCode == CodeSelf {
			return ErrSelf
		}
		if appErr.ErrorCode == CodeRefused {
			return fmt.Errorf("%w: %s", ErrRefusedByPeer, appErr.ErrorMessage)
		}
		return fmt.Errorf("peer closed the connection (code %d): %s", appErr.ErrorCode, appErr.ErrorMessage)
	}
	qc.CloseWithError(CodeProtocol, "handshake failed")
	return fmt.Errorf("handshake: %w", err)
}
