//go:build linux

package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Delay on the public segment.
//
// The kernel has no netem here, and its nftables lacks the queue
// statement; the xtables NFQUEUE target (through nft_compat) exists, but
// not for the bridge family. So a delay is made of parts that kernels with
// br_netfilter, nft_compat and nfnetlink_queue have: bridged IPv4 packets
// in the public namespace pass the ip family's forward hook
// (bridge-nf-call-iptables), where the table netlab_delay has two chains,
// delay_in (priority 0) for packets that come in by a delayed port and
// delay_out (priority 10) for packets that leave by one. Each holds one
// rule per delayed port: the xtables match physdev (--physdev-in or
// --physdev-out port, --physdev-is-bridged) and the target NFQUEUE
// (revision 3, with the bypass flag: a packet passes when no one reads the
// queue). nft cannot write those, so the rules are added over nf_tables
// netlink, again after every "flush ruleset" of applyPublicRules.
//
// Each delayed port has its own queue, read by a netlink socket opened in
// the public namespace. A reader goroutine notes each packet's id and the
// time it arrived; a releaser goroutine sends an NF_ACCEPT batch verdict
// (every id up to the last that is due) once the packet's delay has
// passed. Delays per queue are constant, so the queue stays in order. A
// packet between two delayed ports is held twice: by the sender's queue
// in delay_in, then by the receiver's in delay_out.

// SetDelay holds every IPv4 packet to or from node's link to the public
// segment for d, in each direction (0 removes the delay): a round trip
// between node and an undelayed node takes 2*d longer, one between two
// nodes delayed by d takes 4*d longer. Packets stay in order. A changed
// delay applies to packets that arrive afterwards. Loss (SetLoss) still
// applies to delayed packets; while node is partitioned its packets are
// dropped, not held.
func (l *Lab) SetDelay(node Node, d time.Duration) error {
	if d < 0 || d > time.Minute {
		return fmt.Errorf("netlab: delay %v out of range", d)
	}
	if err := l.lockNode(node); err != nil {
		return err
	}
	defer l.mu.Unlock()
	port := node.portName()
	q := l.delays[port]
	if q == nil {
		if d == 0 {
			return nil
		}
		if l.delays == nil {
			l.delays = map[string]*delayQueue{}
		}
		var err error
		if q, err = openDelayQueue(l.pubNS(), uint16(len(l.delays)+1)); err != nil {
			return err
		}
		l.delays[port] = q
	}
	q.d.Store(int64(d))
	return l.applyPublicRules()
}

// applyDelays adds the delay chains and their rules after applyPublicRules
// has replaced the public namespace's ruleset. Caller holds mu.
func (l *Lab) applyDelays() error {
	var rules []delayRule
	for port, q := range l.delays {
		if q.d.Load() > 0 && !l.impair[port].partition {
			rules = append(rules, delayRule{"delay_in", false, port, q.num}, delayRule{"delay_out", true, port, q.num})
		}
	}
	if len(rules) == 0 {
		return nil
	}
	// Bridged IPv4 packets pass the ip family's hooks (br_netfilter); 1 is
	// the kernel's default, written in case this machine changed it.
	if err := writeSysctl(l.pubNS(), "net/bridge/bridge-nf-call-iptables", "1"); err != nil {
		return fmt.Errorf("netlab: delay needs br_netfilter: %w", err)
	}
	if err := nft(l.ctx, l.pubNS(), `table ip netlab_delay {
	chain delay_in {
		type filter hook forward priority 0; policy accept;
	}
	chain delay_out {
		type filter hook forward priority 10; policy accept;
	}
}
`); err != nil {
		return err
	}
	return doIn(l.pubNS(), func() error { return addDelayRules(rules) })
}

// closeDelays stops every queue's goroutines and closes its socket. Caller
// holds mu.
func (l *Lab) closeDelays() {
	for port, q := range l.delays {
		q.close()
		delete(l.delays, port)
	}
}

// Netlink constants (linux/netfilter/nfnetlink*.h, nf_tables.h,
// xt_NFQUEUE.h).
const (
	nfnlSubsysQueue     = 3
	nfnlSubsysNFTables  = 10
	nfnlMsgBatchBegin   = 0x10
	nfnlMsgBatchEnd     = 0x11
	nfqnlMsgPacket      = 0
	nfqnlMsgConfig      = 2
	nfqnlMsgVerdictBat  = 3
	nfqaPacketHdr       = 1
	nfqaVerdictHdr      = 2
	nfqaCfgCmd          = 1
	nfqaCfgParams       = 2
	nfqaCfgQueueMaxlen  = 3
	nfqaCfgMask         = 4
	nfqaCfgFlags        = 5
	nfqnlCfgCmdBind     = 1
	nfqnlCopyMeta       = 1
	nfqaCfgFGSO         = 4
	nfAccept            = 1
	nftMsgNewRule       = 6
	nftaRuleTable       = 1
	nftaRuleChain       = 2
	nftaRuleExpressions = 4
	nftaListElem        = 1
	nftaExprName        = 1
	nftaExprData        = 2
	nftaMatchName       = 1
	nftaMatchRev        = 2
	nftaMatchInfo       = 3
	xtPhysdevOpIn       = 0x01
	xtPhysdevOpOut      = 0x02
	xtPhysdevOpBridged  = 0x04
	nftaTargetName      = 1
	nftaTargetRev       = 2
	nftaTargetInfo      = 3
	nfqFlagBypass       = 1
	nlaFNested          = 0x8000

	// queueMaxLen bounds the packets held per queue; beyond it the kernel
	// drops, as a router's full buffer would.
	queueMaxLen = 8192
)

type delayRule struct {
	chain string
	out   bool // match the port packets leave by (else the one they come in by)
	port  string
	queue uint16
}

// nlMsg builds one netlink message with an nfgenmsg header.
type nlMsg struct{ b []byte }

func newNLMsg(typ, flags uint16, seq uint32, family uint8, resID uint16) *nlMsg {
	m := &nlMsg{b: make([]byte, 20, 256)}
	binary.NativeEndian.PutUint16(m.b[4:], typ)
	binary.NativeEndian.PutUint16(m.b[6:], flags)
	binary.NativeEndian.PutUint32(m.b[8:], seq)
	m.b[16] = family
	m.b[17] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(m.b[18:], resID)
	return m
}

func (m *nlMsg) attr(typ uint16, data []byte) {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	m.b = append(m.b, h[:]...)
	m.b = append(m.b, data...)
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *nlMsg) str(typ uint16, s string) { m.attr(typ, append([]byte(s), 0)) }

func (m *nlMsg) be32(typ uint16, v uint32) { m.attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

func (m *nlMsg) nest(typ uint16, inner func()) {
	start := len(m.b)
	m.attr(typ|nlaFNested, nil)
	inner()
	binary.NativeEndian.PutUint16(m.b[start:], uint16(len(m.b)-start))
}

func (m *nlMsg) bytes() []byte {
	binary.NativeEndian.PutUint32(m.b[0:], uint32(len(m.b)))
	return m.b
}

// addDelayRules appends the rules over nf_tables netlink, in one batch.
// It runs in the public namespace.
func addDelayRules(rules []delayRule) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlab: nf_tables socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	var batch []byte
	seq := uint32(1)
	batch = append(batch, newNLMsg(nfnlMsgBatchBegin, unix.NLM_F_REQUEST, seq, unix.AF_UNSPEC, nfnlSubsysNFTables).bytes()...)
	want := map[uint32]bool{}
	for _, r := range rules {
		seq++
		want[seq] = true
		m := newNLMsg(nfnlSubsysNFTables<<8|nftMsgNewRule,
			unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND|unix.NLM_F_ACK, seq, unix.NFPROTO_IPV4, 0)
		m.str(nftaRuleTable, "netlab_delay")
		m.str(nftaRuleChain, r.chain)
		m.nest(nftaRuleExpressions, func() {
			expr := func(name string, data func()) {
				m.nest(nftaListElem, func() {
					m.str(nftaExprName, name)
					m.nest(nftaExprData, data)
				})
			}
			expr("match", func() {
				m.str(nftaMatchName, "physdev")
				m.be32(nftaMatchRev, 0)
				// struct xt_physdev_info { char physindev[16], in_mask[16],
				// physoutdev[16], out_mask[16]; u8 invert, bitmask; },
				// padded to XT_ALIGN; the mask covers the name and its NUL.
				info := make([]byte, 72)
				dev, mask, op := 0, 16, xtPhysdevOpIn
				if r.out {
					dev, mask, op = 32, 48, xtPhysdevOpOut
				}
				copy(info[dev:dev+unix.IFNAMSIZ-1], r.port)
				for i := range len(r.port) + 1 {
					info[mask+i] = 0xff
				}
				info[65] = byte(op | xtPhysdevOpBridged)
				m.attr(nftaMatchInfo, info)
			})
			expr("target", func() {
				m.str(nftaTargetName, "NFQUEUE")
				m.be32(nftaTargetRev, 3)
				// struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags },
				// host order, padded to XT_ALIGN.
				info := make([]byte, 8)
				binary.NativeEndian.PutUint16(info[0:], r.queue)
				binary.NativeEndian.PutUint16(info[2:], 1)
				binary.NativeEndian.PutUint16(info[4:], nfqFlagBypass)
				m.attr(nftaTargetInfo, info)
			})
		})
		batch = append(batch, m.bytes()...)
	}
	seq++
	batch = append(batch, newNLMsg(nfnlMsgBatchEnd, unix.NLM_F_REQUEST, seq, unix.AF_UNSPEC, nfnlSubsysNFTables).bytes()...)
	if err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlab: nf_tables batch: %w", err)
	}
	buf := make([]byte, 1<<16)
	for len(want) > 0 {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlab: nf_tables batch: waiting for %d acks: %w", len(want), err)
		}
		for msg := range netlinkMessages(buf[:n]) {
			if msg.typ != unix.NLMSG_ERROR {
				continue
			}
			if errno := msg.errno(); errno != 0 {
				return fmt.Errorf("netlab: adding the NFQUEUE delay rules: %w", errno)
			}
			delete(want, msg.seq)
		}
	}
	return nil
}

type nlReply struct {
	typ  uint16
	seq  uint32
	body []byte // after the nlmsghdr
}

// errno is an NLMSG_ERROR's error (0 for an ack).
func (m nlReply) errno() syscall.Errno {
	if len(m.body) < 4 {
		return syscall.EINVAL
	}
	return syscall.Errno(-int32(binary.NativeEndian.Uint32(m.body)))
}

// netlinkMessages splits a datagram into its messages.
func netlinkMessages(b []byte) func(func(nlReply) bool) {
	return func(yield func(nlReply) bool) {
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return
			}
			m := nlReply{
				typ:  binary.NativeEndian.Uint16(b[4:]),
				seq:  binary.NativeEndian.Uint32(b[8:]),
				body: b[unix.NLMSG_HDRLEN:l],
			}
			if !yield(m) {
				return
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				return
			}
			b = b[l:]
		}
	}
}

// attrs yields the attributes in b.
func attrs(b []byte) func(func(uint16, []byte) bool) {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b))
			typ := binary.NativeEndian.Uint16(b[2:]) &^ nlaFNested
			if l < 4 || l > len(b) {
				return
			}
			if !yield(typ, b[4:l]) {
				return
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				return
			}
			b = b[l:]
		}
	}
}

// delayQueue is one NFQUEUE and the goroutines that hold its packets.
type delayQueue struct {
	num  uint16
	d    atomic.Int64 // time.Duration
	f    *os.File
	rc   syscall.RawConn
	held chan heldPacket
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type heldPacket struct {
	id  uint32
	due time.Time
}

// openDelayQueue binds queue num with a netlink socket opened in namespace
// ns and starts its goroutines.
func openDelayQueue(ns string, num uint16) (*delayQueue, error) {
	var fd int
	err := doIn(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: nfqueue socket: %w", err)
	}
	// The queue's messages are small (metadata only); a large buffer keeps
	// bursts from overflowing it. A lost message costs nothing: the batch
	// verdict of a later packet accepts the lost one too.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlab: nfqueue bind: %w", err)
	}
	q := &delayQueue{
		num:  num,
		f:    os.NewFile(uintptr(fd), "nfqueue"),
		held: make(chan heldPacket, queueMaxLen),
		stop: make(chan struct{}),
	}
	if q.rc, err = q.f.SyscallConn(); err != nil {
		q.f.Close()
		return nil, err
	}
	m := newNLMsg(nfnlSubsysQueue<<8|nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 1, unix.AF_UNSPEC, num)
	m.attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0}) // command, pad, pf (unused)
	params := binary.BigEndian.AppendUint32(nil, 0)      // copy_range
	m.attr(nfqaCfgParams, append(params, nfqnlCopyMeta))
	m.be32(nfqaCfgQueueMaxlen, queueMaxLen)
	m.be32(nfqaCfgMask, nfqaCfgFGSO) // GSO packets whole: held, not split
	m.be32(nfqaCfgFlags, nfqaCfgFGSO)
	if err := q.send(m.bytes()); err != nil {
		q.f.Close()
		return nil, fmt.Errorf("netlab: nfqueue %d config: %w", num, err)
	}
	if err := q.awaitAck(5 * time.Second); err != nil {
		q.f.Close()
		return nil, fmt.Errorf("netlab: nfqueue %d bind: %w", num, err)
	}
	q.wg.Add(2)
	go q.read()
	go q.release()
	return q, nil
}

func (q *delayQueue) send(b []byte) error {
	var serr error
	err := q.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

func (q *delayQueue) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := q.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// awaitAck reads the answer to the config message.
func (q *delayQueue) awaitAck(limit time.Duration) error {
	q.f.SetReadDeadline(time.Now().Add(limit))
	defer q.f.SetReadDeadline(time.Time{})
	buf := make([]byte, 8192)
	for {
		n, err := q.recv(buf)
		if err != nil {
			return err
		}
		for msg := range netlinkMessages(buf[:n]) {
			if msg.typ == unix.NLMSG_ERROR {
				if errno := msg.errno(); errno != 0 {
					return errno
				}
				return nil
			}
		}
	}
}

// read notes each queued packet with the time its delay ends.
func (q *delayQueue) read() {
	defer q.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := q.recv(buf)
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // closed
		}
		now := time.Now()
		for msg := range netlinkMessages(buf[:n]) {
			if msg.typ != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(msg.body) < 4 {
				continue
			}
			for typ, data := range attrs(msg.body[4:]) { // after the nfgenmsg
				if typ == nfqaPacketHdr && len(data) >= 4 {
					p := heldPacket{id: binary.BigEndian.Uint32(data), due: now.Add(time.Duration(q.d.Load()))}
					select {
					case q.held <- p:
					case <-q.stop:
						return
					}
					break
				}
			}
		}
	}
}

// release accepts the held packets in order once their time has come,
// each group of packets that are due together with one batch verdict.
func (q *delayQueue) release() {
	defer q.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var next heldPacket
	have := false
	for {
		if !have {
			select {
			case next = <-q.held:
			case <-q.stop:
				return
			}
		}
		have = false
		if wait := time.Until(next.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-q.stop:
				return
			}
		}
		last := next.id
	drain:
		for {
			select {
			case p := <-q.held:
				if time.Now().Before(p.due) {
					next, have = p, true
					break drain
				}
				last = p.id
			default:
				break drain
			}
		}
		m := newNLMsg(nfnlSubsysQueue<<8|nfqnlMsgVerdictBat, unix.NLM_F_REQUEST, 0, unix.AF_UNSPEC, q.num)
		v := binary.BigEndian.AppendUint32(nil, nfAccept)
		m.attr(nfqaVerdictHdr, binary.BigEndian.AppendUint32(v, last))
		if err := q.send(m.bytes()); err != nil {
			select {
			case <-q.stop:
				return
			default:
			}
		}
	}
}

// close stops the goroutines and closes the socket; the kernel drops the
// packets still held.
func (q *delayQueue) close() {
	q.once.Do(func() {
		close(q.stop)
		q.f.Close()
		q.wg.Wait()
	})
}
