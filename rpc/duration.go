package rpc

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseWindow reads "all" (or "") as 0 and durations such as "1m", "1h",
// "1d", "7d", "90m" or "24h".
func ParseWindow(s string) (time.Duration, error) {
	if s == "" || s == "all" {
		return 0, nil
	}
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("window %q: want all or a duration such as 1m, 1h, 1d, 7d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("window %q: want all or a duration such as 1m, 1h, 1d, 7d", s)
	}
	return d, nil
}

// FormatDuration writes the shortest whole-unit form: 24h, 1h, 90m, 30s.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "all"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
