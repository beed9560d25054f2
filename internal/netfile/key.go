package netfile

import (
	"crypto/hmac"
	"crypto/sha256"

	"golang.org/x/crypto/argon2"
)

func deriveKey(secret string, salt []byte, k KDFParams) [32]byte {
	return [32]byte(argon2.IDKey([]byte(secret), salt, k.Time, k.MemoryKiB, k.Threads, 32))
}

func verifier(key [32]byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(verifierLabel))
	return m.Sum(nil)
}

// DeriveKey turns secret into the network key with the netfile's Argon2id
// parameters and salt. It is slow by design (DefaultKDF fills 64 MiB three
// times). On a Netfile whose KDF is out of range, which Parse never
// returns, it returns the zero key rather than panicking.
func (n *Netfile) DeriveKey(secret string) [32]byte {
	if n.KDF.Check() != nil {
		return [32]byte{}
	}
	return deriveKey(secret, n.Salt, n.KDF)
}

// CheckKey reports, in constant time, whether key matches the verifier.
func (n *Netfile) CheckKey(key [32]byte) bool {
	return len(n.Verifier) == sha256.Size && hmac.Equal(verifier(key), n.Verifier)
}

// Unlock derives the key of secret and checks it against the verifier. It
// returns the key and true for the right secret, the zero key and false
// otherwise.
func (n *Netfile) Unlock(secret string) ([32]byte, bool) {
	if n.KDF.Check() != nil {
		return [32]byte{}, false
	}
	k := n.DeriveKey(secret)
	if !n.CheckKey(k) {
		return [32]byte{}, false
	}
	return k, true
}
