package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// ALPN is the application protocol negotiated in TLS. A QUIC peer speaking
// anything else fails the TLS handshake.
const ALPN = "pipes/1"

// selfSignedCert makes the TLS certificate of a node: self-signed with the
// node's Ed25519 device key, so the key TLS authenticates is the key the
// node id is derived from. Its validity window is wide on purpose: trust
// comes from the membership proof and the identity-signed node certificate,
// not from X.509 dates, and clocks of small devices are often wrong.
func selfSignedCert(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "pipes node"},
		NotBefore:    time.Now().Add(-24 * time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerKey extracts and checks the Ed25519 key of a peer's self-signed
// certificate. It is called by TLS during the handshake.
func peerKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) != 1 {
		return nil, fmt.Errorf("expected one certificate, got %d", len(rawCerts))
	}
	c, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, err
	}
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("certificate key is not Ed25519")
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		return nil, fmt.Errorf("certificate is not self-signed by its key: %w", err)
	}
	return pub, nil
}

// tlsConfig is shared by the dialing and the accepting side. Both present a
// certificate and both check the other's with peerKey; Go's defaults give
// TLS 1.3 with the X25519MLKEM768 hybrid key exchange.
func tlsConfig(cert tls.Certificate) *tls.Config {
	verify := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		_, err := peerKey(rawCerts)
		return err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		NextProtos:            []string{ALPN},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // no CA: verified by VerifyPeerCertificate and the membership proof
		VerifyPeerCertificate: verify,
		ServerName:            "pipes",
	}
}

// StreamTLS returns the TLS configuration of end-to-end connections that
// travel over relayed streams (data connections): TLS 1.3, both sides
// presenting the self-signed certificate of their node key, with ALPN
// "pipes-conn/1". The caller checks which node the peer is with PeerNode
// (the key is checked to be a self-signed Ed25519 key during the
// handshake).
func StreamTLS(key ed25519.PrivateKey) (*tls.Config, error) {
	cert, err := selfSignedCert(key)
	if err != nil {
		return nil, err
	}
	c := tlsConfig(cert)
	c.NextProtos = []string{"pipes-conn/1"}
	return c, nil
}

// PeerNode returns the node id (SHA-256 of the Ed25519 key) of the peer
// of a completed TLS handshake made with StreamTLS.
func PeerNode(state tls.ConnectionState) (ids.Node, error) {
	if len(state.PeerCertificates) != 1 {
		return ids.Node{}, errors.New("transport: no peer certificate")
	}
	pub, ok := state.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return ids.Node{}, errors.New("transport: peer key is not Ed25519")
	}
	return ids.Node(sha256.Sum256(pub)), nil
}
