package rpc

import (
	"time"

	"github.com/topkd/topkd/fsm"
)

// ParseWindow reads a window as every surface writes it (fsm.ParseWindow).
func ParseWindow(s string) (time.Duration, error) { return fsm.ParseWindow(s) }

// FormatWindow writes a window: all, 1m, 1h, 1d, 7d (fsm.FormatWindow).
func FormatWindow(d time.Duration) string { return fsm.FormatWindow(d) }
