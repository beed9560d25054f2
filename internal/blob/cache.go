package blob

import (
	"bytes"
	"sync"

	"github.com/pipesnet/pipes/internal/ids"
)

// recentChunks keeps the last few chunks written or read: a reader
// streaming a file as it arrives, or several receivers asking a sender
// for the same chunk, get it from memory instead of reading, opening and
// checking it again.
type recentChunks struct {
	mu   sync.Mutex
	ents [8]recentChunk
	next int
}

type recentChunk struct {
	root ids.Content
	i    int
	data []byte
}

func (c *recentChunks) put(root ids.Content, i int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.ents {
		if c.ents[k].data != nil && c.ents[k].root == root && c.ents[k].i == i {
			return
		}
	}
	c.ents[c.next] = recentChunk{root: root, i: i, data: data}
	c.next = (c.next + 1) % len(c.ents)
}

// get returns a copy of a recent chunk (callers may modify what they get).
func (c *recentChunks) get(root ids.Content, i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.ents {
		if e.data != nil && e.root == root && e.i == i {
			return bytes.Clone(e.data)
		}
	}
	return nil
}

// forget drops the recent chunks of root.
func (c *recentChunks) forget(root ids.Content) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.ents {
		if c.ents[k].root == root {
			c.ents[k] = recentChunk{}
		}
	}
}
