package testbed

import (
	"context"
	"net/http"
	"os/exec"
	"testing"
	"time"
)

func reachable(url string) bool {
	hc := &http.Client{Timeout: 700 * time.Millisecond}
	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Each fault does what it says, seen from the host and from inside a
// node's network namespace.
func TestDockerFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers; skipped with -short")
	}
	if !DockerAvailable() {
		t.Skip("no Docker engine")
	}
	c, err := NewDocker(Options{Nodes: 3, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := c.(*docker)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i := range 3 {
		if err := c.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	// from says whether node i reaches node j's HTTP port.
	from := func(i, j int) bool {
		pid, err := run("docker", "inspect", "-f", "{{.State.Pid}}", d.names[i])
		if err != nil {
			t.Fatal(err)
		}
		return exec.Command("nsenter", "-t", pid, "-n", "curl", "-sf", "-m", "1", c.URL(j)+"/healthz").Run() == nil
	}
	if !from(0, 1) || !from(0, 2) {
		t.Fatal("n1 does not reach the others before any fault")
	}
	if err := c.Cut(0, 1); err != nil {
		t.Fatal(err)
	}
	if from(0, 1) || from(1, 0) || !from(0, 2) || !from(1, 2) {
		t.Errorf("after cut n1 <-> n2: n1->n2 %v, n2->n1 %v, n1->n3 %v, n2->n3 %v; want only the first two false",
			from(0, 1), from(1, 0), from(0, 2), from(1, 2))
	}
	if err := c.HealCuts(); err != nil {
		t.Fatal(err)
	}
	if !from(0, 1) || !from(1, 0) {
		t.Error("cut not healed")
	}
	if err := c.Isolate(0); err != nil {
		t.Fatal(err)
	}
	if reachable(c.URL(0)) || from(1, 0) {
		t.Error("isolated n1 still reachable")
	}
	if err := c.Heal(0); err != nil {
		t.Fatal(err)
	}
	if !reachable(c.URL(0)) || !from(1, 0) {
		t.Error("n1 not reachable after reconnecting")
	}
	if err := c.Pause(0); err != nil {
		t.Fatal(err)
	}
	if reachable(c.URL(0)) {
		t.Error("paused n1 answers")
	}
	if err := c.Resume(0); err != nil {
		t.Fatal(err)
	}
	if !reachable(c.URL(0)) {
		t.Error("resumed n1 does not answer")
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if reachable(c.URL(0)) {
		t.Error("killed n1 answers")
	}
	if err := c.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

func TestProcessFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	c, err := NewProcesses(Options{Nodes: 1, Logf: t.Logf}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := c.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(0); err != nil {
		t.Fatal(err)
	}
	if reachable(c.URL(0)) {
		t.Error("stopped process answers")
	}
	if err := c.Resume(0); err != nil {
		t.Fatal(err)
	}
	if !reachable(c.URL(0)) {
		t.Error("continued process does not answer")
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if reachable(c.URL(0)) {
		t.Error("killed process answers")
	}
	if err := c.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Isolate(0); err != ErrUnsupported {
		t.Errorf("isolate: %v, want ErrUnsupported", err)
	}
}
