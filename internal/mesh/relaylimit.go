package mesh

import (
	"sync"
	"time"
)

// Relaying for others is bounded per peer: the routed messages and
// datagrams that arrive from one peer and are not for this node spend
// that peer's budget (Config.RelayRate bytes a second, with a burst of
// one second's worth); beyond it they are dropped and counted
// (Stats.RelayLimited). One member cannot take all of a relay's
// bandwidth and CPU, and the queues toward the next hops stay free for
// the others. Data connections have their own bounds (see conns).

// DefaultRelayRate is the default of Config.RelayRate.
const DefaultRelayRate = 32 << 20

// relayBudget is a token bucket of bytes.
type relayBudget struct {
	mu     sync.Mutex
	tokens float64
	at     time.Time
}

// take spends n bytes of a budget of rate bytes a second and reports
// whether there were enough.
func (b *relayBudget) take(now time.Time, rate float64, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.at.IsZero() {
		b.tokens = rate
	} else {
		b.tokens = min(rate, b.tokens+rate*now.Sub(b.at).Seconds())
	}
	b.at = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// mayRelay spends n bytes of p's relay budget.
func (m *Mesh) mayRelay(p *peer, n int) bool {
	if p.relay.take(time.Now(), float64(m.relayRate.Load()), n) {
		return true
	}
	m.stats.relayLimited.Add(1)
	return false
}
