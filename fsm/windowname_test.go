package fsm

import (
	"testing"
	"time"
)

func TestWindowNames(t *testing.T) {
	for s, d := range map[string]time.Duration{"all": 0, "1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour,
		"7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute, "30s": 30 * time.Second, "1.5s": 1500 * time.Millisecond} {
		got, err := ParseWindow(s)
		if err != nil || got != d {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v", s, got, err, d)
		}
		if f := FormatWindow(d); f != s {
			t.Errorf("FormatWindow(%v) = %q, want %q", d, f, s)
		}
	}
	for _, in := range []string{"24h", "1440m", "86400s"} {
		d, _ := ParseWindow(in)
		if f := FormatWindow(d); f != "1d" {
			t.Errorf("%s is written %q, want 1d", in, f)
		}
	}
	for _, bad := range []string{"0d", "-1h", "x", "1w", "d", "0"} {
		if _, err := ParseWindow(bad); err == nil {
			t.Errorf("ParseWindow(%q) accepted", bad)
		}
	}
}
