package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Every Raft group of a node shares one TCP port. A connection opens with a
// preamble naming its group: the magic bytes "TKR", a version byte and the
// group id (uvarint). Group 0 is the meta group, group p+1 is partition p.
const (
	muxMagic   = "TKR"
	muxVersion = 1
	// MetaGroup is the group id of the meta Raft group.
	MetaGroup uint32 = 0
)

// PartitionGroup is the mux group id of partition p.
func PartitionGroup(p int) uint32 { return uint32(p) + 1 }

// Dialer opens a connection to a peer's Raft port; TLS can wrap it.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// tlsDialer wraps dial (plain TCP when nil) in a TLS client handshake.
func tlsDialer(dial Dialer, cfg *tls.Config) Dialer {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		if dial != nil {
			c, err = dial(ctx, addr)
		} else {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft TLS handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
}

// Mux demultiplexes one listener into a raft.StreamLayer per group.
type Mux struct {
	ln     net.Listener
	dial   Dialer
	log    *slog.Logger
	mu     sync.Mutex
	layers map[uint32]*layer
	conns  map[net.Conn]struct{} // accepted, so Close can end their readers
	closed chan struct{}
	wg     sync.WaitGroup
}

// NewMux serves ln; dial defaults to plain TCP.
func NewMux(ln net.Listener, dial Dialer, log *slog.Logger) *Mux {
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	m := &Mux{ln: ln, dial: dial, log: log, layers: make(map[uint32]*layer), conns: make(map[net.Conn]struct{}),
		closed: make(chan struct{})}
	m.wg.Add(1)
	go m.serve()
	return m
}

// Addr is the listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Layer returns the stream layer of a group, registering it.
func (m *Mux) Layer(group uint32) raft.StreamLayer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.layers[group]; ok {
		return l
	}
	l := &layer{m: m, group: group, conns: make(chan net.Conn), done: make(chan struct{})}
	m.layers[group] = l
	return l
}

// Close stops accepting and closes every layer.
func (m *Mux) Close() error {
	select {
	case <-m.closed:
		return nil
	default:
	}
	close(m.closed)
	err := m.ln.Close()
	m.mu.Lock()
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return err
}

func (m *Mux) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.log.Error("raft mux accept", "err", err)
			return
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(c)
		}()
	}
}

// route reads the preamble and hands the connection to its group.
func (m *Mux) route(c net.Conn) {
	m.mu.Lock()
	select {
	case <-m.closed:
		m.mu.Unlock()
		c.Close()
		return
	default:
	}
	m.conns[c] = struct{}{}
	m.mu.Unlock()
	c = &trackedConn{Conn: c, m: m}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	group, err := readPreamble(br)
	if err != nil {
		m.log.Warn("raft mux: bad preamble", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	m.mu.Lock()
	l := m.layers[group]
	m.mu.Unlock()
	if l == nil {
		m.log.Warn("raft mux: connection for unknown group", "group", group, "remote", c.RemoteAddr().String())
		c.Close()
		return
	}
	conn := &bufferedConn{Conn: c, r: br}
	select {
	case l.conns <- conn:
	case <-l.done:
		c.Close()
	case <-m.closed:
		c.Close()
	}
}

func readPreamble(r *bufio.Reader) (uint32, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, err
	}
	if string(head[:3]) != muxMagic || head[3] != muxVersion {
		return 0, fmt.Errorf("preamble %q", head[:])
	}
	g, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, err
	}
	if g > 1<<32-1 {
		return 0, fmt.Errorf("group %d out of range", g)
	}
	return uint32(g), nil
}

func writePreamble(w io.Writer, group uint32) error {
	buf := make([]byte, 4, 4+binary.MaxVarintLen32)
	copy(buf, muxMagic)
	buf[3] = muxVersion
	buf = binary.AppendUvarint(buf, uint64(group))
	_, err := w.Write(buf)
	return err
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// layer is one group's raft.StreamLayer.
type layer struct {
	m     *Mux
	group uint32
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

var _ raft.StreamLayer = (*layer)(nil)

func (l *layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

func (l *layer) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.m.mu.Lock()
		if l.m.layers[l.group] == l { // a reopened group may have a new layer
			delete(l.m.layers, l.group)
		}
		l.m.mu.Unlock()
	})
	return nil
}

func (l *layer) Addr() net.Addr { return l.m.ln.Addr() }

func (l *layer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := l.m.dial(ctx, string(addr))
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if err := writePreamble(c, l.group); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft mux preamble to %s: %w", addr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// trackedConn forgets itself in the mux when closed.
type trackedConn struct {
	net.Conn
	m    *Mux
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.m.mu.Lock()
		delete(c.m.conns, c.Conn)
		c.m.mu.Unlock()
	})
	return c.Conn.Close()
}
