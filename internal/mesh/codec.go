package mesh

import "google.golang.org/protobuf/proto"

func marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func unmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }
