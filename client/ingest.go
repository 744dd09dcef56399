package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
)

// Event is one occurrence to count.
type Event struct {
	Item string `json:"item"`
	// Count is the event's weight; 0 means 1.
	Count int64 `json:"count,omitempty"`
	// Time is the event time; zero lets the receiving node stamp it.
	Time time.Time `json:"time,omitzero"`
	// Dimensions are reserved for per-dimension top-K, not supported yet:
	// a batch with any is refused rather than sent to a server that would
	// drop them.
	Dimensions map[string]string `json:"dimensions,omitempty"`
}

// IngestResult is the server's answer to one batch.
type IngestResult struct {
	// Accepted counts the events counted in the "all" window.
	Accepted uint64 `json:"accepted"`
	// Duplicate is true when the batch had been applied before (a retry of a
	// batch whose answer was lost): the counts are the original answer.
	Duplicate bool `json:"duplicate"`
	// LateDropped counts, per window, events too late for that window.
	LateDropped map[string]uint64 `json:"late_dropped,omitempty"`
	Rejected    uint64            `json:"rejected"`
	// Sequence is the batch's sequence number for the client's producer.
	Sequence uint64 `json:"sequence"`
	// Attempts is how many requests it took (1 without retries).
	Attempts int `json:"attempts"`
}

// BatchResult is the final answer to a batch sent by Add, AddMany or Flush.
type BatchResult struct {
	Leaderboard string
	Events      int
	Result      IngestResult
	Err         error
	// Latency runs from the first send of the batch to its final answer.
	Latency time.Duration
}

// IngestBatch sends events as one batch and waits for its answer, retrying
// an unknown outcome with the same sequence. An empty leaderboard means
// "default".
func (c *Client) IngestBatch(ctx context.Context, leaderboard string, events []Event) (IngestResult, error) {
	if c.isClosed() {
		return IngestResult{}, ErrClosed
	}
	return c.ingest(ctx, leaderboard, events, 0)
}

// Resend sends a batch again under the sequence an earlier IngestBatch
// reported (IngestResult.Sequence) when it gave up with an error for which
// OutcomeUnknown is true: if that batch was committed, the answer is its
// original outcome with Duplicate set, and nothing is counted twice. Send
// the same events to the same leaderboard. A sequence more than 256 behind
// the producer's newest is refused explicitly (InvalidArgument), never
// answered as a silent duplicate.
func (c *Client) Resend(ctx context.Context, leaderboard string, events []Event, sequence uint64) (IngestResult, error) {
	if c.isClosed() {
		return IngestResult{}, ErrClosed
	}
	if sequence == 0 {
		return IngestResult{}, invalidArg("resend", "sequence 0 was never handed out")
	}
	return c.ingest(ctx, leaderboard, events, sequence)
}

// OutcomeUnknown reports whether a failed ingest may nonetheless have been
// counted: a request was sent and no answer settled it (the node became
// unavailable, a deadline passed or the context was canceled after sending,
// the retries ran out). Such a batch is resent with Resend, under the
// sequence the error carries (IngestResult.Sequence), never as a new batch:
// Resend answers the original outcome if it was counted and counts it if
// not. A batch refused before it was sent, or refused by the server
// outright (invalid input, unknown leaderboard), is not unknown.
func OutcomeUnknown(err error) bool {
	var u *UnknownOutcomeError
	return errors.As(err, &u)
}

// UnknownOutcomeError is the error of a batch that was sent but not
// settled; Err is the last failure.
type UnknownOutcomeError struct {
	Sequence uint64
	Err      error
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("%v (outcome unknown: resend sequence %d)", e.Err, e.Sequence)
}

func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// definite reports whether the server's answer settles that a request was
// not applied. Anything else after a send may have been applied.
func definite(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeFailedPrecondition,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeUnimplemented, connect.CodeOutOfRange:
		return connect.IsWireError(err)
	}
	return false
}

// notApplied reports whether one attempt's failure settles that it was not
// applied: a definite refusal, a refusal the node marks as made before any
// part was proposed (an overloaded node's 429), or a request that never
// reached a node.
func notApplied(err error) bool {
	if definite(err) || errors.Is(err, syscall.ECONNREFUSED) || tlsRefused(err) {
		return true
	}
	var ce *connect.Error
	return errors.As(err, &ce) && connect.IsWireError(ce) && ce.Meta().Get(outcomeHeader) == outcomeRefused
}

// The server's mark of a refusal before proposal (rpc.OutcomeHeader).
const (
	outcomeHeader  = "Topkd-Outcome"
	outcomeRefused = "refused"
)

// ingest sends a batch under a new sequence (resend == 0) or under resend:
// split by partition straight to the leaders when the routes allow it
// (routing.go), else whole to any node.
func (c *Client) ingest(ctx context.Context, leaderboard string, events []Event, resend uint64) (IngestResult, error) {
	op := fmt.Sprintf("ingest %d events into %q", len(events), lbName(leaderboard))
	if len(events) == 0 {
		return IngestResult{}, invalidArg(op, "no events")
	}
	parts := c.nodes.Load().routes.split(leaderboard, events, time.Now())
	if parts == nil {
		parts = []routedPart{{events: events}}
	}
	msgs := make([]*topkv1.IngestRequest, len(parts))
	for i, part := range parts {
		var err error
		if msgs[i], err = c.request(op, leaderboard, part.events); err != nil {
			return IngestResult{}, err
		}
	}
	seq := resend
	if seq == 0 {
		var err error
		if seq, err = c.seqs.acquire(ctx); err != nil {
			return IngestResult{}, fmt.Errorf("%s: %w", op, err)
		}
		defer c.seqs.release(seq)
	}
	for _, m := range msgs {
		m.Sequence = seq
	}
	return c.send(ctx, op, parts, msgs, seq)
}

// request encodes events as one request without its sequence.
func (c *Client) request(op, leaderboard string, events []Event) (*topkv1.IngestRequest, error) {
	for i, e := range events {
		// Protobuf strings must be UTF-8: say which event is wrong rather
		// than fail to marshal the whole batch.
		if !utf8.ValidString(e.Item) {
			return nil, invalidArg(op, "events[%d].item: not valid UTF-8", i)
		}
		if len(e.Dimensions) > 0 {
			return nil, invalidArg(op, "events[%d].dimensions: not supported yet", i)
		}
	}
	return &topkv1.IngestRequest{Leaderboard: leaderboard, ProducerId: c.producerID, Epoch: c.epoch, Columns: columnsOf(events)}, nil
}

func lbName(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// seqWindowLimit keeps the sequences a client has outstanding within half of
// the server's deduplication window (256 recent sequences per producer), so
// that a batch retried for a long time is still recognised as a retry.
const seqWindowLimit = 128

// seqWindow hands out sequence numbers, holding back a new one while the
// oldest unanswered batch is seqWindowLimit sequences behind.
type seqWindow struct {
	mu      sync.Mutex
	next    uint64
	out     map[uint64]struct{}
	changed chan struct{} // closed and replaced on every release
}

func newSeqWindow() *seqWindow {
	return &seqWindow{next: 1, out: map[uint64]struct{}{}, changed: make(chan struct{})}
}

func (s *seqWindow) acquire(ctx context.Context) (uint64, error) {
	for {
		s.mu.Lock()
		if s.next-s.oldest() < seqWindowLimit {
			seq := s.next
			s.next++
			s.out[seq] = struct{}{}
			s.mu.Unlock()
			return seq, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for older batches to be answered: %w", ctx.Err())
		}
	}
}

// oldest returns the lowest outstanding sequence, or next when none is.
func (s *seqWindow) oldest() uint64 {
	low := s.next
	for q := range s.out {
		low = min(low, q)
	}
	return low
}

func (s *seqWindow) release(seq uint64) {
	s.mu.Lock()
	delete(s.out, seq)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// columnsOf encodes events column-wise: far fewer allocations on both ends
// than one message per event.
func columnsOf(events []Event) *topkv1.EventColumns {
	cols := &topkv1.EventColumns{Items: make([]string, len(events))}
	for i, e := range events {
		cols.Items[i] = e.Item
		if e.Count != 0 {
			if cols.Counts == nil {
				cols.Counts = make([]int64, len(events))
			}
			cols.Counts[i] = e.Count
		}
		if !e.Time.IsZero() {
			if cols.TimeUnixMs == nil {
				cols.TimeUnixMs = make([]int64, len(events))
			}
			cols.TimeUnixMs[i] = e.Time.UnixMilli()
		}
	}
	return cols
}
