// Package testbed runs topkd clusters for fault tests and injects faults
// into them: as containers on a private Docker network (kill, pause,
// isolation, partial partitions, restart), or as processes on loopback for
// machines without Docker (kill, pause, restart).
package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// ErrUnsupported is returned for a fault the backend cannot inject.
var ErrUnsupported = errors.New("fault not supported by this testbed")

// Options of a cluster.
type Options struct {
	Nodes         int
	Partitions    int           // default 4
	Replicas      int           // default 3
	DeadNodeGrace time.Duration // default 5m, the server's
	Args          []string      // more topkd flags for every node
	// PowerLoss puts each node's data directory on a lossyfs mount
	// (processes only, as root), so that PowerOff loses what was not
	// fsynced.
	// Logf receives the testbed's actions (a test's t.Logf), so that a
	// failure's output says what was done when.
	Logf      func(format string, args ...any)
	PowerLoss bool
	// Secure: Args protect every port (TLS, tokens, a gossip key), so the
	// nodes do without --insecure even on a container network.
	Secure bool
}

func (o Options) withDefaults() Options {
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// flags are topkd's flags for node i whose addresses are on host; join is
// the gossip address of the first node for the others.
func (o Options) flags(i int, host string, http, raft, gossip int, join string) []string {
	f := []string{"--node-id", NodeID(i), "--http-addr", fmt.Sprintf("%s:%d", host, http),
		"--raft-addr", fmt.Sprintf("%s:%d", host, raft), "--gossip-addr", fmt.Sprintf("%s:%d", host, gossip),
		"--partitions", fmt.Sprint(o.Partitions), "--replicas", fmt.Sprint(o.Replicas), "--log-level", "info"}
	if o.DeadNodeGrace > 0 {
		f = append(f, "--dead-node-grace", o.DeadNodeGrace.String())
	}
	if i > 0 {
		f = append(f, "--join", join)
	}
	if !o.Secure && host != "127.0.0.1" {
		f = append(f, "--insecure") // containers listen beyond loopback
	}
	return append(f, o.Args...)
}

// NodeID is node i's id: n1, n2, ...
func NodeID(i int) string { return fmt.Sprintf("n%d", i+1) }

// Cluster is a set of topkd nodes, numbered from 0, and the faults a test
// can inject into them. Node 0 starts the cluster; the others join it.
type Cluster interface {
	Kind() string
	Size() int
	// URL is node i's HTTP base URL, reachable from the test process.
	URL(i int) string
	// Start starts node i (again, after Kill or Stop) and waits until it
	// is ready.
	Start(ctx context.Context, i int) error
	// Kill sends node i SIGKILL and waits until it is gone.
	Kill(i int) error
	// Pause freezes every thread of node i; Resume thaws them.
	Pause(i int) error
	Resume(i int) error
	// Isolate cuts node i off the network; Heal connects it again.
	Isolate(i int) error
	Heal(i int) error
	// Cut drops all traffic between nodes i and j (a partial partition:
	// both still reach the others). HealCuts removes every cut.
	Cut(i, j int) error
	HealCuts() error
	// PowerOff kills node i and loses every write its data directory had
	// not made durable (Options.PowerLoss); Start brings it back.
	PowerOff(i int) error
	// LogTail returns the end of node i's log.
	LogTail(i int, bytes int) string
	// Close removes every node and what the testbed created for them.
	Close()
}

// waitReady polls url's /readyz until it answers 200.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-exited:
			return fmt.Errorf("%s exited before it was ready", url)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// run runs a command and returns its combined output as an error when it fails.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}
