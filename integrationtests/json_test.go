package integrationtests

import "encoding/json"

// What the tests read of the pipes command's --json output: the fields
// they check, under the names the command gives them.

// ref is a node of `node peers`.
type ref struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Connected bool   `json:"connected"`
	Peer      bool   `json:"peer"`
}

// nodeJSON is `node status`.
type nodeJSON struct {
	ID         string `json:"id"`
	IdentityID string `json:"identity_id"`
}

// pipelineJSON is a pipeline of `pipeline list` and `pipeline info`.
type pipelineJSON struct {
	Name          string            `json:"name"`
	Encrypted     bool              `json:"encrypted"`
	HasSecret     bool              `json:"has_secret"`
	SecretHolders []json.RawMessage `json:"secret_holders"`
}

// udpMapJSON is `udp-map`.
type udpMapJSON struct {
	Addr string `json:"addr"`
}

// pingJSON is `ping`.
type pingJSON struct {
	Path *struct {
		Direct bool `json:"direct"`
	} `json:"path"`
	RTTMs []float64 `json:"rtt_ms"`
}

// netcheckJSON is `netcheck`.
type netcheckJSON struct {
	Local        string `json:"local"`
	BehindNAT    bool   `json:"behind_nat"`
	Filtering    string `json:"filtering"`
	Observations []struct {
		Observed string `json:"observed"`
	} `json:"observations"`
	PortHelper string `json:"port_helper"`
}

// exposeJSON is the first line of `expose --json`.
type exposeJSON struct {
	Service string `json:"service"`
	Target  string `json:"target"`
	Allowed []struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	} `json:"allowed"`
}
