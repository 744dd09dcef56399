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
