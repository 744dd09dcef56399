package fsm

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"default": true, "songs.2026-12": true, "A_b-c.d": true, "9": true, strings.Repeat("a", 128): true,
		"": false, "../x": false, ".hidden": false, "-x": false, "_x": false, "a b": false, "a/b": false,
		"a\x00b": false, "bell\a": false, "caf\xe9": false, "café": false, strings.Repeat("a", 129): false,
		strings.Repeat("a", 1_000_000): false,
	} {
		err := CheckName(name)
		if (err == nil) != ok {
			t.Errorf("CheckName(%.20q) = %v, want ok=%v", name, err, ok)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("CheckName(%.20q): error of %d bytes", name, len(err.Error()))
		}
	}
}
