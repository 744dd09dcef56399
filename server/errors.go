package server

import "errors"

var (
	// ErrNotLeader: this node does not lead the partition (retry elsewhere or later).
	ErrNotLeader = errors.New("not the leader")
	// ErrOverloaded: a bounded queue or memory limit is full; retry later.
	ErrOverloaded = errors.New("overloaded")
	// ErrInvalid wraps validation failures of outside input.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotReady: the node is still replaying its log after a restart.
	ErrNotReady = errors.New("not ready")
	// ErrUnknownOutcome: the write may or may not have committed (leadership lost, timeout); retry with the same sequence.
	ErrUnknownOutcome = errors.New("outcome unknown")
)

// refusedWhole marks a refusal made before any part of a request was
// proposed: the request is certainly not applied.
type refusedWhole struct{ error }

func (e refusedWhole) Unwrap() error { return e.error }

// NotApplied reports whether err refused a whole request before any part of
// it was proposed, so a client may report it refused rather than of
// unknown outcome.
func NotApplied(err error) bool {
	var r refusedWhole
	return errors.As(err, &r)
}
