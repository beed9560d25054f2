package pipes

import (
	"encoding/json"

	"google.golang.org/protobuf/proto"
)

func marshalProto(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

func unmarshalProto(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
