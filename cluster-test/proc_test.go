package clustertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	topkdBin string
	binDir   string

	taggedMu   sync.Mutex
	taggedBins = map[string]string{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "topkd-clustertest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	topkdBin = filepath.Join(dir, "topkd")
	out, err := exec.Command("go", "build", "-o", topkdBin, "../cmd/topkd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build topkd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// failpointBin is topkd built with the "failpoint" tag (server/failpoint):
// TOPKD_FAILPOINTS then kills it or fails a call at a named point.
func failpointBin(t *testing.T) string { return taggedBin(t, "failpoint") }

// taggedBin is topkd built once with a build tag.
func taggedBin(t *testing.T, tag string) string {
	t.Helper()
	taggedMu.Lock()
	defer taggedMu.Unlock()
	if bin, ok := taggedBins[tag]; ok {
		return bin
	}
	bin := filepath.Join(binDir, "topkd-"+tag)
	if out, err := exec.Command("go", "build", "-tags", tag, "-o", bin, "../cmd/topkd").CombinedOutput(); err != nil {
		t.Fatalf("build topkd with -tags %s: %v\n%s", tag, err, out)
	}
	taggedBins[tag] = bin
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one topkd process with fixed ports and data dir across restarts.
// bin, args and env apply to the next start.
type proc struct {
	t                              *testing.T
	dir, http, raft, gossip, debug string
	bin                            string
	args, env                      []string
	cmd                            *exec.Cmd
	log                            *os.File
	exited                         chan struct{} // closed when the running process ended
}

func newProc(t *testing.T) *proc {
	dir := t.TempDir()
	lf, err := os.Create(filepath.Join(dir, "topkd.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, dir: filepath.Join(dir, "data"), http: freePort(t), raft: freePort(t), gossip: freePort(t),
		debug: freePort(t), log: lf, bin: topkdBin}
	t.Cleanup(func() {
		p.kill()
		lf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(lf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("topkd log tail:\n%s", b)
		}
	})
	return p
}

func (p *proc) url() string { return "http://" + p.http }

func (p *proc) start() {
	p.t.Helper()
	if err := p.launch(); err != nil {
		p.t.Fatal(err)
	}
}

// launch starts the process and waits until it is ready; an exit before
// that is an error carrying the exit status.
func (p *proc) launch() error {
	p.t.Helper()
	args := append([]string{"--data-dir", p.dir, "--node-id", "n1", "--http-addr", p.http,
		"--raft-addr", p.raft, "--gossip-addr", p.gossip, "--debug-addr", p.debug, "--partitions", "4"}, p.args...)
	p.cmd = exec.Command(p.bin, args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	p.exited = exited
	go func(cmd *exec.Cmd) {
		_ = cmd.Wait()
		close(exited)
	}(p.cmd)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("topkd exited before it was ready: %v", p.cmd.ProcessState)
		default:
		}
		resp, err := http.Get(p.url() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("topkd did not become ready within 30s")
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
}

// waitExit waits for the process to end by itself and returns its exit code.
func (p *proc) waitExit(timeout time.Duration) (int, error) {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("topkd still running after %v", timeout)
	}
}

// postEvents sends one producer batch; it returns the decoded answer or an error
// for anything but 200 (transport errors included: the outcome is then unknown).
func postEvents(client *http.Client, base, producer string, seq uint64, body []byte) (map[string]any, error) {
	url := fmt.Sprintf("%s/api/events?producer_id=%s&epoch=1&sequence=%d", base, producer, seq)
	resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var out map[string]any
	return out, json.Unmarshal(b, &out)
}

type topAnswer struct {
	Items []struct {
		ID    string `json:"id"`
		Count int64  `json:"count"`
	} `json:"items"`
}

func getTop(t *testing.T, base string, k int) topAnswer {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/api/top-items?k=%d&consistency=linearizable", base, k))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a topAnswer
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("top-items: %d %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}
