package keys

import (
	"encoding/hex"
	"strings"
	"testing"
)

// TestDeriveKnownAnswers pins every derivation: the expected values were
// computed by the code that wrote the data directories in use before this
// package existed, so a change here would make them unreadable.
func TestDeriveKnownAnswers(t *testing.T) {
	var secret, salt, id [32]byte
	for i := range 32 {
		secret[i], salt[i], id[i] = byte(i), byte(0x40+i), byte(0xa0+i)
	}
	cases := []struct {
		label    Label
		salt, id []byte
		n        int
		want     string
	}{
		{StoreKey, salt[:], nil, 32, "63a41ca932bc7ee5898f1d9a5531bb25a614fd75476e519e7d081956996db163"},
		{Blobs, nil, nil, 32, "33c5260cb529bfdd2afcb524b4e6210a114797c221a7da61fe6150490a6d87ef"},
		{Definitions, nil, nil, 32, "5eecddefd6caf93623408a54ca54b8a29e0524a0c91eedf1c1ab7033701f8fb9"},
		{PipelineKeys, nil, nil, 32, "0c3deb8f36e93c2e7ca77367b6013f170192a4e18c639aebcd2f09c63e46c40a"},
		{PipelineLog, nil, id[:], 32, "215be6493b34e53bfe5cfd9200e83f98772d845877ee25e3b361f0225679e27b"},
		{BlobKey, salt[:], nil, 32, "3b4b16253b57b7ffb126340ec2cbce4eead4021b0a2c79e1a2dc241a9b01c5e7"},
		{PipelinePacketKey, nil, nil, 32, "f70ea2169c44cb53e5391bf0ff4712dc056a0e3eed0656880d9c52d961384ac5"},
		{PipelineSecretKey, nil, nil, 32, "7fb3d622395c387ec43ce94df936786696b6157f2c45dcfd13e59a852522754f"},
	}
	seen := map[Label]bool{}
	for _, c := range cases {
		seen[c.label] = true
		if got := hex.EncodeToString(Derive(secret[:], c.salt, c.label, c.id, c.n)); got != c.want {
			t.Errorf("%q: derived %s, want %s", c.label, got, c.want)
		}
	}
	for _, l := range Labels {
		if !seen[l] {
			t.Errorf("label %q has no known answer", l)
		}
	}
}

// TestDeriveSeparates: the label, the id, the salt and the secret each
// change the key; the length does not change its first bytes (HKDF).
func TestDeriveSeparates(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	base := hex.EncodeToString(Derive(secret, nil, PipelineLog, []byte{1}, 32))
	for name, k := range map[string][]byte{
		"label":  Derive(secret, nil, Definitions, []byte{1}, 32),
		"id":     Derive(secret, nil, PipelineLog, []byte{2}, 32),
		"no id":  Derive(secret, nil, PipelineLog, nil, 32),
		"salt":   Derive(secret, []byte{1}, PipelineLog, []byte{1}, 32),
		"secret": Derive(secret[1:], nil, PipelineLog, []byte{1}, 32),
	} {
		if hex.EncodeToString(k) == base {
			t.Errorf("changing the %s left the key unchanged", name)
		}
	}
	if long := Derive(secret, nil, PipelineLog, []byte{1}, 64); hex.EncodeToString(long[:32]) != base || len(long) != 64 {
		t.Errorf("64-byte key: %x, want a prefix of %s", long, base)
	}
}

// TestLabelsUnique: no label repeats or is a prefix of another, so that
// label || id never equals another label || id.
func TestLabelsUnique(t *testing.T) {
	for i, a := range Labels {
		if a == "" {
			t.Errorf("empty label at %d", i)
		}
		for j, b := range Labels {
			if i != j && strings.HasPrefix(string(b), string(a)) {
				t.Errorf("label %q is a prefix of %q", a, b)
			}
		}
	}
}

func TestDerivePanicsOnImpossibleLength(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for a length HKDF-SHA256 cannot produce")
		}
	}()
	Derive([]byte("k"), nil, Blobs, nil, 255*32+1)
}
