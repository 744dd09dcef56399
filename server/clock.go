package server

import "time"

// Clock is every clock read outside the FSM; tests inject their own.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// WallClock reads the system clock.
var WallClock Clock = wallClock{}
