package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Port forwarding: a listener's connections, each joined to one that is
// dialled for it. `pipes forward` accepts TCP connections and dials a
// node's service; `pipes expose` accepts data connections to a service and
// dials a TCP address. The daemon and the demo use the same code.

// connEvent is something that happened to one forwarded connection.
type connEvent struct {
	Event    string    `json:"event"` // open, close, error (the dial failed), or stopped (the forwarding ended)
	Time     time.Time `json:"time"`
	Conn     uint64    `json:"conn,omitempty"`      // the connection's number, from 1
	From     string    `json:"from,omitempty"`      // who connected: a TCP address, or a node id
	FromName string    `json:"from_name,omitempty"` // the node's name@location, if known
	Sent     int64     `json:"sent,omitempty"`      // close: bytes from the accepted side to the dialled side
	Received int64     `json:"received,omitempty"`  // close: bytes the other way
	Error    string    `json:"error,omitempty"`
}

// relayDialTimeout bounds the dial made for one accepted connection.
const relayDialTimeout = 30 * time.Second

// relay accepts connections on ln until ln is closed or ctx ends, dials a
// connection for each with dial and splices the two. It reports each
// connection's events with report (from its own goroutines), if not nil;
// from names the side that connected. When ctx ends it closes ln and
// every connection; it returns once all are closed: nil if ctx ended, else
// the error that ended the accepting.
func relay(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error),
	from func(net.Conn) (string, string), report func(connEvent)) error {
	if report == nil {
		report = func(connEvent) {}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var seq atomic.Uint64
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and try again,
			// as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			report(connEvent{Event: "error", Time: time.Now(), Error: "accept: " + err.Error()})
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		ev := connEvent{Time: time.Now(), Conn: seq.Add(1)}
		ev.From, ev.FromName = from(c)
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
			d, err := dial(dctx)
			cancel()
			if err != nil {
				c.Close()
				if ctx.Err() == nil {
					ev.Event, ev.Time, ev.Error = "error", time.Now(), err.Error()
					report(ev)
				}
				return
			}
			ev.Event = "open"
			report(ev)
			ev.Sent, ev.Received, err = splice(ctx, c, d)
			ev.Event, ev.Time = "close", time.Now()
			if err != nil {
				ev.Error = err.Error()
			}
			report(ev)
		})
	}
}

// splice copies between a and b both ways until both directions have
// ended or ctx ends, passing on the end of each direction as a half-close
// (CloseWrite), then closes both. It returns the bytes copied from a to b
// and from b to a, and the first error other than an orderly end (none if
// ctx ended).
func splice(ctx context.Context, a, b net.Conn) (ab, ba int64, err error) {
	var once sync.Once
	abort := func(e error) {
		once.Do(func() { err = e })
		a.Close()
		b.Close()
	}
	stop := context.AfterFunc(ctx, func() { abort(nil) })
	defer stop()
	one := func(dst, src net.Conn, n *int64) {
		var e error
		if *n, e = io.Copy(dst, src); e != nil {
			abort(e)
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // fails only if dst is gone, which the other direction finds out
		} else {
			abort(nil)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { one(b, a, &ab) })
	one(a, b, &ba)
	wg.Wait()
	stop()
	abort(nil)
	if ctx.Err() != nil {
		err = nil
	}
	return ab, ba, err
}
