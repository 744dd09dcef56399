package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client is closed")

// Client talks to a topkd cluster through any of its nodes. It is safe for
// concurrent use. Close it to flush queued events and stop its goroutines.
type Client struct {
	opts       options
	given      []string                // the base URLs New was given
	nodes      atomic.Pointer[nodeSet] // given plus discovered
	ownHTTP    *http.Client            // closed by Close; nil when the caller gave one
	next       atomic.Uint32
	producerID string
	epoch      uint64
	seqs       *seqWindow
	closeDone  chan struct{} // closed when the first Close has stopped everything

	// runCtx is the context of batches sent by the batchers; Close cancels
	// it only when flushing did not finish in time.
	runCtx    context.Context
	runCancel context.CancelFunc
	stop      chan struct{} // closed by Close after the final flush
	stopped   atomic.Bool   // set by Close after the final flush: no more requests
	wg        sync.WaitGroup

	mu       sync.Mutex
	batchers map[string]*batcher
	closed   bool

	fmu      sync.Mutex
	flights  map[*flight]struct{}
	fchanged chan struct{} // closed and replaced whenever a flight ends
	firstErr error         // first batch error since the last Flush
}

// New returns a client for the nodes at addrs ("host:port" or a base URL
// such as "https://host:port"). It does not connect until the first call.
func New(addrs []string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if len(addrs) == 0 {
		return nil, errors.New("no address given")
	}
	c := &Client{opts: o, producerID: o.producerID, epoch: o.epoch, seqs: newSeqWindow(), closeDone: make(chan struct{}),
		stop: make(chan struct{}), batchers: map[string]*batcher{}, flights: map[*flight]struct{}{},
		fchanged: make(chan struct{})}
	if c.producerID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("producer id: %w", err)
		}
		c.producerID = hex.EncodeToString(b[:])
	}
	if c.epoch == 0 {
		c.epoch = uint64(time.Now().UnixNano())
	}
	hc := o.httpClient
	if hc == nil {
		tr := newTransport()
		tr.TLSClientConfig = o.tls.Clone() // transports add their protocols to it
		hc = &http.Client{Transport: tr}
		c.ownHTTP = hc
	}
	if o.token != "" {
		hc = withToken(hc, o.token)
	}
	scheme := "http://"
	if o.tls != nil {
		scheme = "https://"
	}
	for _, a := range addrs {
		u, err := baseURL(a, scheme)
		if err != nil {
			return nil, err
		}
		c.given = append(c.given, u)
	}
	c.nodes.Store(newNodeSet(hc, c.given))
	c.runCtx, c.runCancel = context.WithCancel(context.Background())
	if o.discovery > 0 {
		c.wg.Add(1)
		go c.discover(hc, o.discovery)
	}
	return c, nil
}

// newTransport is tuned for many concurrent unary calls to few hosts. It
// speaks HTTP/1.1 with a pool of connections, over TLS as over plain text:
// against three TLS nodes on 2 cores, HTTP/2's one multiplexed connection
// answered 0.81-0.92x the cached top-100 queries/s of HTTP/1.1 and
// 0.93-0.95x the ingest (2026-12-05, alternating runs).
func newTransport() *http.Transport {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		Protocols:             &p,
		ExpectContinueTimeout: time.Second,
	}
}

// baseURL makes addr a base URL; a bare host:port gets scheme.
func baseURL(addr, scheme string) (string, error) {
	a := strings.TrimSpace(addr)
	if a == "" {
		return "", errors.New("empty address")
	}
	if !strings.Contains(a, "://") {
		a = scheme + a
	}
	if !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") {
		return "", fmt.Errorf("address %q: only http and https are supported", addr)
	}
	return strings.TrimRight(a, "/"), nil
}

// Addrs returns the base URLs the client uses: the ones it was given, then
// the members it discovered.
func (c *Client) Addrs() []string { return append([]string(nil), c.nodes.Load().addrs...) }

// Producer returns the client's producer identity.
func (c *Client) Producer() (id string, epoch uint64) { return c.producerID, c.epoch }

// Close flushes queued events (as Flush), then stops the client's goroutines
// and closes its idle connections. When ctx ends first, batches still in
// flight are abandoned (their outcome is unknown) and ctx's error is
// returned. Calls after Close fail with ErrClosed.
//
// A later Close waits until the first has stopped everything (bounded by
// its own ctx), then returns nil: the first Close reports the error.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		select {
		case <-c.closeDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.closed = true
	bs := make([]*batcher, 0, len(c.batchers))
	for _, b := range c.batchers {
		bs = append(bs, b)
	}
	c.mu.Unlock()
	for _, b := range bs {
		b.close()
	}
	err := c.flush(ctx, bs)
	if err != nil && ctx.Err() != nil {
		c.runCancel()
	}
	c.fmu.Lock() // orders stopped against launch's check
	c.stopped.Store(true)
	c.fmu.Unlock()
	close(c.stop)
	c.wg.Wait()
	c.runCancel()
	if c.ownHTTP != nil {
		c.ownHTTP.CloseIdleConnections()
	}
	close(c.closeDone)
	return err
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
