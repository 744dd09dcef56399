//go:build failpoint

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Enabled reports whether points are compiled in.
const Enabled = true

type point struct {
	action string
	at     int // the hit that triggers, from 1
	hits   int
}

var (
	mu     sync.Mutex
	points = parse(os.Getenv("TOPKD_FAILPOINTS"))
)

func parse(spec string) map[string]*point {
	out := map[string]*point{}
	for _, f := range strings.Split(spec, ",") {
		name, act, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			continue
		}
		p := &point{action: act, at: 1}
		if a, n, ok := strings.Cut(act, "@"); ok {
			p.action = a
			if v, err := strconv.Atoi(n); err == nil && v > 0 {
				p.at = v
			}
		}
		out[name] = p
	}
	return out
}

// Hit triggers the point's action if it is armed for this hit.
func Hit(name string) error {
	mu.Lock()
	p := points[name]
	if p == nil {
		mu.Unlock()
		return nil
	}
	p.hits++
	fire := p.hits == p.at || (p.action == "error" && p.hits > p.at)
	mu.Unlock()
	if !fire {
		return nil
	}
	switch p.action {
	case "kill":
		fmt.Fprintf(os.Stderr, "failpoint %s: SIGKILL\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	case "error":
		return fmt.Errorf("%w at %s", ErrInjected, name)
	}
	return nil
}

// Arm adds or replaces points at run time, in TOPKD_FAILPOINTS's syntax,
// with fresh hit counts: a test arms a point once its cluster has formed.
func Arm(spec string) {
	mu.Lock()
	defer mu.Unlock()
	for name, p := range parse(spec) {
		points[name] = p
	}
}
