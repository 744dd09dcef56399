package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/topkd/topkd/proto/topk/v1/topkv1connect"
)

// retryPolicy says which failures a call may retry.
type retryPolicy int

const (
	// retryUnknown retries every failure whose outcome is unknown or
	// transient: for idempotent calls (reads, ingest with a sequence).
	retryUnknown retryPolicy = iota
	// retryRefused only fails over when the request certainly never reached
	// a server (connection refused): for calls that are not idempotent.
	retryRefused
)

// retryable reports whether err may be retried under p.
func retryable(err error, p retryPolicy) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if tlsRefused(err) {
		return false // another node has the same certificates
	}
	if p == retryRefused {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted, connect.CodeAborted:
		return true
	case connect.CodeUnknown:
		// Synthesized by the client when the connection broke while
		// reading the answer: the request may have been applied.
		return !connect.IsWireError(err)
	}
	return false
}

// call runs fn against one node after another until it succeeds, fails with
// an error p does not retry, or the retry deadline passes. It returns the
// number of attempts made.
func (c *Client) call(ctx context.Context, op string, p retryPolicy, fn func(context.Context, topkv1connect.TopKServiceClient) error) (int, error) {
	return c.callFrom(ctx, op, p, nil, fn)
}

// callFrom is call whose first attempt goes to first (when not nil), the
// node that leads what the request is for; retries go round the nodes.
func (c *Client) callFrom(ctx context.Context, op string, p retryPolicy, first topkv1connect.TopKServiceClient,
	fn func(context.Context, topkv1connect.TopKServiceClient) error) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.retryTimeout)
	defer cancel()
	start := int(c.next.Add(1))
	began := time.Now()
	var cause error     // the last failure that was not our own deadline cutting an attempt short
	refusedOnly := true // every attempt so far found no one listening
	for attempt := 0; ; attempt++ {
		if c.stopped.Load() {
			return attempt, fmt.Errorf("%s: %w", op, ErrClosed)
		}
		node := first
		if attempt > 0 || node == nil {
			conns := c.nodes.Load().conns
			node = conns[(start+attempt)%len(conns)]
		}
		actx, acancel := context.WithTimeout(ctx, c.opts.attemptTimeout)
		err := fn(actx, node)
		acancel()
		if err == nil {
			return attempt + 1, nil
		}
		if !retryable(err, p) {
			return attempt + 1, fmt.Errorf("%s: %w", op, err)
		}
		refusedOnly = refusedOnly && errors.Is(err, syscall.ECONNREFUSED)
		if refusedOnly && c.opts.refusedTimeout > 0 && time.Since(began) >= c.opts.refusedTimeout {
			return attempt + 1, fmt.Errorf("%s: no node accepted a connection in %v (%d attempts): %w",
				op, time.Since(began).Round(time.Millisecond), attempt+1, err)
		}
		if cause == nil || ctx.Err() == nil || connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			cause = err
		}
		delay, hinted := retryHint(err)
		if !hinted {
			delay = c.backoff(attempt)
		}
		dl, _ := ctx.Deadline()
		if ctx.Err() != nil || time.Now().Add(delay).After(dl) {
			return attempt + 1, fmt.Errorf("%s: gave up after %d attempts in %v: %w",
				op, attempt+1, time.Since(began).Round(time.Millisecond), cause)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt + 1, fmt.Errorf("%s: gave up after %d attempts in %v: %w",
				op, attempt+1, time.Since(began).Round(time.Millisecond), cause)
		case <-t.C:
		}
	}
}

// backoff is exponential with "equal jitter": half fixed, half random, so
// retries of many producers spread out but never hammer at zero delay.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.minBackoff << min(attempt, 20)
	if d <= 0 || d > c.opts.maxBackoff {
		d = c.opts.maxBackoff
	}
	half := d / 2
	return half + rand.N(half+1)
}

// retryHint reads a server's hint of when to retry: a google.rpc.RetryInfo
// error detail, else a Retry-After header (seconds or an HTTP date).
func retryHint(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, false
	}
	for _, d := range ce.Details() {
		if d.Type() != "google.rpc.RetryInfo" {
			continue
		}
		if v, ok := parseRetryInfo(d.Bytes()); ok {
			return v, true
		}
	}
	if v := ce.Meta().Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(time.Until(t), 0), true
		}
	}
	return 0, false
}

// parseRetryInfo decodes google.rpc.RetryInfo{google.protobuf.Duration
// retry_delay = 1} without depending on the genproto module.
func parseRetryInfo(b []byte) (time.Duration, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, false
			}
			var d durationpb.Duration
			if err := proto.Unmarshal(v, &d); err != nil || d.CheckValid() != nil {
				return 0, false
			}
			return max(d.AsDuration(), 0), true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return 0, false
}

// tlsRefused reports whether a TLS handshake failed over certificates: a
// node's not trusted here, or ours not accepted there. Retrying cannot help.
func tlsRefused(err error) bool {
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &unknownCA) || errors.As(err, &hostname)
}
