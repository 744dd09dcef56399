//go:build failpoint

package failpoint

import (
	"errors"
	"testing"
)

func TestParseAndHit(t *testing.T) {
	points = parse("a=error@3, b=kill@2,bad, c=error")
	for i := 1; i <= 4; i++ {
		err := Hit("a")
		if (i >= 3) != errors.Is(err, ErrInjected) {
			t.Errorf("hit %d of a=error@3: %v", i, err)
		}
	}
	if err := Hit("c"); !errors.Is(err, ErrInjected) {
		t.Errorf("c=error: %v, want the injected error at the first hit", err)
	}
	if err := Hit("b"); err != nil {
		t.Errorf("b=kill@2 at its first hit: %v", err)
	}
	if p := points["b"]; p == nil || p.action != "kill" || p.at != 2 {
		t.Errorf("b parsed as %+v", p)
	}
	if err := Hit("unarmed"); err != nil {
		t.Errorf("an unarmed point: %v", err)
	}
}
