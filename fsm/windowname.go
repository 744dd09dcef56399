package fsm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseWindow and FormatWindow are the one way a window is read and
// written on every surface: REST, Connect, the CLI, metric labels and
// errors. "all" (or "") is the all-time window, 0.
func ParseWindow(s string) (time.Duration, error) {
	if s == "" || s == "all" {
		return 0, nil
	}
	d, err := ParseSpan(s)
	if err != nil {
		return 0, fmt.Errorf("window %q: want all or a duration such as 1m, 1h, 1d, 7d", s)
	}
	return d, nil
}

// FormatWindow writes "all" for 0, else FormatSpan.
func FormatWindow(d time.Duration) string {
	if d == 0 {
		return "all"
	}
	return FormatSpan(d)
}

// ParseSpan reads a positive duration: Go's form ("90m", "1h30m") or whole
// days ("1d", "7d").
func ParseSpan(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 100*365 {
			return 0, fmt.Errorf("duration %q: want a positive number of days, hours (h), minutes (m) or seconds (s)", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("duration %q: want a positive number of days (d), hours (h), minutes (m) or seconds (s)", s)
	}
	return d, nil
}

// FormatSpan writes the largest whole unit: 7d, 1d, 36h, 90m, 30s; other
// durations in Go's form.
func FormatSpan(d time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d != 0 && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.name
		}
	}
	return d.String()
}
