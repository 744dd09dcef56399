package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/topkd/topkd/cluster-test/lossyfs"
)

// procs is a cluster of topkd processes on loopback. Network faults are
// not supported: the nodes share one network namespace.
type procs struct {
	opts  Options
	bin   string
	dir   string
	nodes []*procNode
}

type procNode struct {
	mu      sync.Mutex
	args    []string
	data    string // the data directory topkd is given
	backing string // with power loss: where lossyfs keeps the data
	lossy   *lossyfs.FS
	log     string
	http    int
	cmd     *exec.Cmd
	exited  chan struct{}
}

// NewProcesses builds topkd from the module around the working directory
// into dir and prepares a cluster of processes whose data and logs stay in
// dir; none is started.
func NewProcesses(opts Options, dir string) (Cluster, error) {
	opts = opts.withDefaults()
	gomod, err := run("go", "env", "GOMOD")
	if err != nil || gomod == "" || gomod == os.DevNull {
		return nil, fmt.Errorf("find the module to build topkd from: %v", err)
	}
	p := &procs{opts: opts, bin: filepath.Join(dir, "topkd"), dir: dir}
	build := exec.Command("go", "build", "-o", p.bin, "./cmd/topkd")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build topkd: %v\n%s", err, out)
	}
	ports := make([]int, 3*opts.Nodes)
	for k := range ports {
		if ports[k], err = freePort(); err != nil {
			return nil, err
		}
	}
	for i := range opts.Nodes {
		n := &procNode{data: filepath.Join(dir, NodeID(i), "data"), log: filepath.Join(dir, NodeID(i)+".log"), http: ports[3*i]}
		if opts.PowerLoss {
			n.backing = filepath.Join(dir, NodeID(i), "backing")
			for _, d := range []string{n.data, n.backing} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return nil, err
				}
			}
		}
		n.args = append([]string{"--data-dir", n.data}, opts.flags(i, "127.0.0.1", ports[3*i], ports[3*i+1], ports[3*i+2],
			fmt.Sprintf("127.0.0.1:%d", ports[2]))...)
		p.nodes = append(p.nodes, n)
	}
	return p, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (p *procs) Kind() string     { return "processes" }
func (p *procs) Size() int        { return len(p.nodes) }
func (p *procs) URL(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", p.nodes[i].http) }

func (p *procs) Start(ctx context.Context, i int) error {
	p.opts.Logf("testbed: start %s", NodeID(i))
	n := p.nodes[i]
	if n.backing != "" && n.lossy == nil {
		lfs, err := lossyfs.Mount(n.backing, n.data)
		if err != nil {
			return err
		}
		n.lossy = lfs
	}
	lf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, n.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(exited)
	}()
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	return waitReady(ctx, p.URL(i), exited)
}

func (p *procs) signal(i int, sig syscall.Signal) error {
	n := p.nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", NodeID(i))
	}
	select {
	case <-exited:
		return fmt.Errorf("%s is not running", NodeID(i))
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGKILL:
		<-exited
	case syscall.SIGSTOP:
		// The signal is queued; each thread stops when it next enters the
		// kernel. Until all have, the process may still answer.
		return waitStopped(cmd.Process.Pid, 5*time.Second)
	}
	return nil
}

// waitStopped waits until every thread of pid is in the stopped state.
func waitStopped(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil {
			return err
		}
		stopped := len(tasks) > 0
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			// The state follows the parenthesised command name: "pid (comm) T ...".
			if i := bytes.LastIndexByte(b, ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' && b[i+2] != 't' {
				stopped = false
				break
			}
		}
		if stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d: not every thread stopped within %v", pid, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *procs) Kill(i int) error {
	p.opts.Logf("testbed: SIGKILL %s", NodeID(i))
	return p.signal(i, syscall.SIGKILL)
}

func (p *procs) Pause(i int) error {
	p.opts.Logf("testbed: SIGSTOP %s", NodeID(i))
	return p.signal(i, syscall.SIGSTOP)
}

func (p *procs) Resume(i int) error {
	p.opts.Logf("testbed: SIGCONT %s", NodeID(i))
	return p.signal(i, syscall.SIGCONT)
}

func (p *procs) PowerOff(i int) error {
	n := p.nodes[i]
	if n.lossy == nil {
		return fmt.Errorf("power off %s: %w (Options.PowerLoss is off)", NodeID(i), ErrUnsupported)
	}
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	select {
	case <-exited: // already down: the power goes all the same
	default:
		if err := p.signal(i, syscall.SIGKILL); err != nil {
			return err
		}
	}
	ops, files, err := n.lossy.PowerLoss()
	n.lossy = nil
	p.opts.Logf("testbed: power off %s: %d unsynced namespace changes and %d files undone", NodeID(i), ops, files)
	return err
}

func (p *procs) Isolate(int) error  { return ErrUnsupported }
func (p *procs) Heal(int) error     { return ErrUnsupported }
func (p *procs) Cut(int, int) error { return ErrUnsupported }
func (p *procs) HealCuts() error    { return nil }

func (p *procs) LogTail(i int, n int) string {
	b, _ := os.ReadFile(p.nodes[i].log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (p *procs) Close() {
	for i, n := range p.nodes {
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.mu.Unlock()
		if cmd == nil {
			continue
		}
		select {
		case <-exited:
		default:
			_ = p.signal(i, syscall.SIGCONT)
			_ = p.signal(i, syscall.SIGKILL)
		}
	}
	for _, n := range p.nodes {
		if n.lossy != nil {
			_ = n.lossy.Unmount()
		}
	}
}
