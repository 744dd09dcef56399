package rpc

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"

	"github.com/topkd/topkd/fsm"
	"github.com/topkd/topkd/server"
)

var errMalformedPart = errors.New("a part must carry exactly one leaderboard's deltas")

// OutcomeHeader, set to OutcomeRefused, tells a client that a failed
// ingest was refused before any part of it was proposed: not applied,
// whatever the code (a 429 is otherwise of unknown outcome).
const (
	OutcomeHeader  = "Topkd-Outcome"
	OutcomeRefused = "refused"
)

// code maps an error from the node to a Connect code; HTTP statuses derive from it.
func code(err error) connect.Code {
	switch {
	// Retryable first: a batch refused by one partition and unavailable on
	// another is retried whole with the same sequence, which is safe.
	case errors.Is(err, server.ErrNotLeader), errors.Is(err, server.ErrNotReady), errors.Is(err, server.ErrUnknownOutcome):
		return connect.CodeUnavailable
	case errors.Is(err, server.ErrRotationIncomplete):
		return connect.CodeUnavailable
	case errors.Is(err, server.ErrGossipNotEncrypted):
		return connect.CodeFailedPrecondition
	case errors.Is(err, server.ErrOverloaded):
		return connect.CodeResourceExhausted
	case errors.Is(err, server.ErrInvalid), errors.Is(err, fsm.ErrUnknownWindow), errors.Is(err, fsm.ErrInvalidK):
		return connect.CodeInvalidArgument
	case errors.Is(err, fsm.ErrUnknownLeaderboard):
		return connect.CodeNotFound
	case errors.Is(err, server.ErrLeaderboardExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}

func connectErr(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	ce = connect.NewError(code(err), err)
	if ce.Code() == connect.CodeResourceExhausted {
		// The retry hint: queues drain and the memory guard re-samples within a second.
		ce.Meta().Set("Retry-After", "1")
	}
	if server.NotApplied(err) {
		ce.Meta().Set(OutcomeHeader, OutcomeRefused)
	}
	return ce
}

func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeInvalidArgument:
		return http.StatusBadRequest
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeFailedPrecondition:
		return http.StatusPreconditionFailed
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeAlreadyExists:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeCanceled:
		return 499
	}
	return http.StatusInternalServerError
}
