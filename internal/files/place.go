package files

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"time"

	"github.com/pipesnet/pipes/internal/ids"
)

// Placement (docs/architecture.md, "Replication and archives"): every
// node decides alone, from the holders index and the duties, what it
// must do about a file; the decisions are pure functions of a view, so
// that every node with the same view comes to the same placement.
//
// Nodes are ranked for a file by rendezvous hashing: SHA-256(file id |
// node id), the highest first. A node is alive while it is online, or
// offline for less than the repair delay: a restart is not a loss, a long
// absence is.

// score is the rendezvous score of node for file.
func score(file ids.Content, node ids.Node) [32]byte {
	h := sha256.New()
	h.Write(file[:])
	h.Write(node[:])
	return [32]byte(h.Sum(nil))
}

// rank sorts nodes by their score for file, the highest first.
func rank(file ids.Content, nodes []ids.Node) {
	sc := make(map[ids.Node][32]byte, len(nodes))
	for _, n := range nodes {
		sc[n] = score(file, n)
	}
	slices.SortFunc(nodes, func(a, b ids.Node) int {
		sa, sb := sc[a], sc[b]
		return -bytes.Compare(sa[:], sb[:])
	})
}

// peer is what a view knows of one node.
type peer struct {
	node         ids.Node
	offlineSince time.Time // zero while online
	files        map[ids.Content]struct{}
}

func (p peer) online() bool { return p.offlineSince.IsZero() }

func (p peer) holds(id ids.Content) bool { _, ok := p.files[id]; return ok }

// view is a node's picture of the network at one moment: every node the
// holders index knows, and this one.
type view struct {
	self        ids.Node
	peers       []peer // self included, online
	now         time.Time
	repairAfter time.Duration
}

func (v *view) alive(p peer) bool {
	return p.online() || v.now.Sub(p.offlineSince) < v.repairAfter
}

// aliveNodes returns the alive nodes (online if onlineOnly).
func (v *view) nodes(onlineOnly bool) []ids.Node {
	var out []ids.Node
	for _, p := range v.peers {
		if p.online() || !onlineOnly && v.alive(p) {
			out = append(out, p.node)
		}
	}
	return out
}

// holders returns the alive holders of id (online ones only if
// onlineOnly), ranked for rankBy.
func (v *view) holders(id, rankBy ids.Content, onlineOnly bool) []ids.Node {
	var out []ids.Node
	for _, p := range v.peers {
		if p.holds(id) && (p.online() || !onlineOnly && v.alive(p)) {
			out = append(out, p.node)
		}
	}
	rank(rankBy, out)
	return out
}

// act is what a node does about one file.
type act int

const (
	actNone    act = iota
	actFetch       // take a copy (fetch it from a holder)
	actRelease     // drop the copy taken for the duty
	actRebuild     // rebuild a lost shard from the others
)

// copiesCase is the input of decideCopies besides the view.
type copiesCase struct {
	file     ids.Content
	copies   int
	selfDuty bool // this node's copy was taken for a duty (it may release it)
	excluded bool // this node's user removed the file: it takes no copy
	// restorable: the file has an archive, so a copy can be made with no
	// holder online (else there is nothing to fetch from).
	restorable bool
	// How long the network has lacked copies (deficit) or held too many
	// online (excess), as this node saw it; settle is the release delay.
	deficitAge, excessAge, settle time.Duration
}

// decideCopies decides what this node does about a copies duty, and
// reports whether copies lack (alive holders fewer than the duty) and
// whether there are too many (online holders more than the duty).
//
// Lacking k copies, the k top-ranked online non-holders fetch it (if
// there is an online holder to fetch from, or an archive); a
// deficit that lasts widens the set by one node each repair delay (a
// candidate that cannot or will not take it is passed over). With e
// copies too many online, for longer than settle, the e lowest-ranked
// online holders release theirs if they took them for a duty (never a
// copy the user added or fetched); if the excess lasts (a copy kept by
// its user ranked low), the set widens by one each settle, never to the
// top-ranked holder. Holders offline but alive count against a deficit
// but not for an excess: between the two, nothing moves.
func decideCopies(v *view, c copiesCase) (a act, deficit, excess bool) {
	alive := v.holders(c.file, c.file, false)
	online := v.holders(c.file, c.file, true)
	deficit = len(alive) < c.copies
	excess = len(online) > c.copies
	selfHolds := slices.Contains(alive, v.self)
	switch {
	case deficit && !selfHolds && !c.excluded && (len(online) > 0 || c.restorable):
		var cand []ids.Node
		for _, p := range v.peers {
			if p.online() && !p.holds(c.file) {
				cand = append(cand, p.node)
			}
		}
		rank(c.file, cand)
		want := c.copies - len(alive)
		if v.repairAfter > 0 {
			want += int(c.deficitAge / v.repairAfter)
		}
		if i := slices.Index(cand, v.self); i >= 0 && i < want {
			return actFetch, deficit, excess
		}
	case excess && selfHolds && c.selfDuty && c.settle > 0 && c.excessAge >= c.settle:
		fromBottom := len(online) - 1 - slices.Index(online, v.self)
		allowed := len(online) - c.copies + int(c.excessAge/c.settle) - 1
		allowed = min(allowed, len(online)-1)
		if fromBottom < allowed {
			return actRelease, deficit, excess
		}
	}
	return actNone, deficit, excess
}

// assignShards places the shards of an archive on distinct nodes: each
// shard stays with its top-ranked alive holder not given another shard;
// the shards left go, in order, to the top-ranked alive node not given
// one (to the top-ranked alive node if every one was: fewer nodes than
// shards). A shard with no alive node at all gets the zero node.
func assignShards(v *view, shards []ids.Content) []ids.Node {
	out := make([]ids.Node, len(shards))
	given := map[ids.Node]bool{}
	for i, s := range shards {
		for _, h := range v.holders(s, s, false) {
			if !given[h] {
				out[i], given[h] = h, true
				break
			}
		}
	}
	all := v.nodes(false)
	for i, s := range shards {
		if out[i] != (ids.Node{}) {
			continue
		}
		cand := slices.Clone(all)
		rank(s, cand)
		for _, n := range cand {
			if !given[n] {
				out[i], given[n] = n, true
				break
			}
		}
		if out[i] == (ids.Node{}) && len(cand) > 0 {
			out[i] = cand[0]
		}
	}
	return out
}

// shardCase is the input of decideShard besides the view.
type shardCase struct {
	shard    ids.Content
	to       ids.Node // where assignShards put it
	selfDuty bool     // this node's copy was taken for the duty
	// available is how many shards of the archive an online node holds.
	available, data   int
	excessAge, settle time.Duration
}

// decideShard decides what this node does about one shard: the node it
// is assigned to fetches it from a holder, or rebuilds it from data
// others when no holder is alive; a node that holds it for the duty but
// is not assigned it releases it once the assigned node, online,
// announces it holds it (for longer than settle).
func decideShard(v *view, c shardCase) (a act, excess bool) {
	alive := v.holders(c.shard, c.shard, false)
	online := v.holders(c.shard, c.shard, true)
	selfHolds := slices.Contains(alive, v.self)
	excess = len(online) > 1 && slices.Contains(online, c.to)
	switch {
	case c.to == v.self && !selfHolds && len(online) > 0:
		return actFetch, excess
	case c.to == v.self && len(alive) == 0 && c.available >= c.data:
		return actRebuild, excess
	case selfHolds && c.to != v.self && c.selfDuty && excess && c.settle > 0 && c.excessAge >= c.settle:
		return actRelease, excess
	}
	return actNone, excess
}

// keeper returns the node that re-broadcasts the duties of file and
// sends them to nodes that come online: the top-ranked online node but
// skip.
func keeper(v *view, file ids.Content, skip ids.Node) ids.Node {
	var best ids.Node
	var bs [32]byte
	found := false
	for _, p := range v.peers {
		if !p.online() || p.node == skip {
			continue
		}
		if sc := score(file, p.node); !found || bytes.Compare(sc[:], bs[:]) > 0 {
			best, bs, found = p.node, sc, true
		}
	}
	return best
}
