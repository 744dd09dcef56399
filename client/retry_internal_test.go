package client

import (
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRetryable(t *testing.T) {
	wire := func(c connect.Code) error {
		// An error as decoded from a server's response.
		return connect.NewWireError(c, errors.New("from the server"))
	}
	tests := []struct {
		name string
		err  error
		p    retryPolicy
		want bool
	}{
		{"unavailable", wire(connect.CodeUnavailable), retryUnknown, true},
		{"deadline", connect.NewError(connect.CodeDeadlineExceeded, errors.New("t")), retryUnknown, true},
		{"exhausted", wire(connect.CodeResourceExhausted), retryUnknown, true},
		{"invalid", wire(connect.CodeInvalidArgument), retryUnknown, false},
		{"not found", wire(connect.CodeNotFound), retryUnknown, false},
		{"server internal", wire(connect.CodeInternal), retryUnknown, false},
		{"broken read", connect.NewError(connect.CodeUnknown, errors.New("unexpected EOF")), retryUnknown, true},
		{"client marshal failure", connect.NewError(connect.CodeInternal, errors.New("marshal message")), retryUnknown, false},
		{"canceled", connect.NewError(connect.CodeCanceled, errors.New("c")), retryUnknown, false},
		{"refused", connect.NewError(connect.CodeUnavailable, fmt.Errorf("dial: %w", syscall.ECONNREFUSED)), retryRefused, true},
		{"unavailable, not idempotent", wire(connect.CodeUnavailable), retryRefused, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.err, tt.p); got != tt.want {
				t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func retryInfo(d time.Duration) []byte {
	dur, _ := proto.Marshal(durationpb.New(d))
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, dur)
}

func TestParseRetryInfo(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want time.Duration
		ok   bool
	}{
		{"250ms", retryInfo(250 * time.Millisecond), 250 * time.Millisecond, true},
		{"2s", retryInfo(2 * time.Second), 2 * time.Second, true},
		{"empty", nil, 0, false},
		{"truncated", retryInfo(time.Second)[:3], 0, false},
		{"other field first", append(protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 9), retryInfo(time.Second)...), time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseRetryInfo(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseRetryInfo = (%v, %v), want (%v, %v)", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	e := connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
	e.Meta().Set("Retry-After", "3")
	if d, ok := retryHint(fmt.Errorf("wrapped: %w", e)); !ok || d != 3*time.Second {
		t.Errorf("retryHint = (%v, %v), want (3s, true)", d, ok)
	}
	e2 := connect.NewError(connect.CodeUnavailable, errors.New("x"))
	e2.Meta().Set("Retry-After", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat))
	if d, ok := retryHint(e2); !ok || d != 0 {
		t.Errorf("retryHint(past date) = (%v, %v), want (0, true)", d, ok)
	}
	if _, ok := retryHint(errors.New("plain")); ok {
		t.Error("a plain error has a hint")
	}
}

func TestBackoffStaysInBounds(t *testing.T) {
	c := &Client{opts: defaultOptions()}
	for attempt := range 40 {
		d := c.backoff(attempt)
		hi := min(c.opts.minBackoff<<min(attempt, 20), c.opts.maxBackoff)
		if d < hi/2 || d > hi {
			t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempt, d, hi/2, hi)
		}
	}
}
