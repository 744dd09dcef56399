package testbed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// DockerAvailable says whether a Docker engine answers.
func DockerAvailable() bool {
	return exec.Command("docker", "info").Run() == nil
}

var (
	imageOnce sync.Once
	imageErr  error
)

// Image is the tag of the image fault tests run: topkd built static
// (CGO_ENABLED=0) from the module around the working directory, FROM
// scratch. It is built once per process.
const Image = "topkd-testbed:latest"

func buildImage() error {
	imageOnce.Do(func() {
		gomod, err := run("go", "env", "GOMOD")
		if err != nil || gomod == "" || gomod == os.DevNull {
			imageErr = fmt.Errorf("find the module to build topkd from: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "topkd-testbed-image-")
		if err != nil {
			imageErr = err
			return
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "topkd"), "./cmd/topkd")
		build.Dir = filepath.Dir(gomod)
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := build.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("build topkd: %v\n%s", err, out)
			return
		}
		df := "FROM scratch\nCOPY topkd /topkd\nENTRYPOINT [\"/topkd\", \"--data-dir\", \"/data\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			imageErr = err
			return
		}
		_, imageErr = run("docker", "build", "-q", "-t", Image, dir)
	})
	return imageErr
}

// docker is a cluster of containers on a private network with fixed
// addresses, so a node keeps its address when disconnected and reconnected.
type docker struct {
	opts   Options
	label  string
	net    string
	subnet string // first three octets
	names  []string
	mu     sync.Mutex
	cuts   map[[2]int]bool
}

// NewDocker creates the network and the containers of a cluster; none is
// started.
func NewDocker(opts Options) (Cluster, error) {
	opts = opts.withDefaults()
	if opts.PowerLoss {
		return nil, fmt.Errorf("power loss: %w (use processes)", ErrUnsupported)
	}
	if err := buildImage(); err != nil {
		return nil, err
	}
	removeOrphans()
	d := &docker{opts: opts, label: fmt.Sprintf("topkd-testbed=%d-%d", os.Getpid(), rand.Uint32()), cuts: map[[2]int]bool{}}
	d.net = "topkd-testbed-" + strings.SplitN(d.label, "=", 2)[1]
	var err error
	for range 20 { // a free /24 among 172.30.0.0/16
		d.subnet = fmt.Sprintf("172.30.%d", rand.IntN(250)+1)
		if _, err = run("docker", "network", "create", "--label", d.label, "--subnet", d.subnet+".0/24", d.net); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	for i := range opts.Nodes {
		name := fmt.Sprintf("%s-%s", d.net, NodeID(i))
		args := append([]string{"create", "--label", d.label, "--name", name, "--hostname", NodeID(i), "--network", d.net,
			"--ip", d.ip(i), Image}, opts.flags(i, d.ip(i), 7070, 7071, 7072, d.ip(0)+":7072")...)
		if _, err := run("docker", args...); err != nil {
			d.Close()
			return nil, err
		}
		d.names = append(d.names, name)
	}
	return d, nil
}

// removeOrphans removes the containers and networks of testbeds whose
// test process is gone (killed before its cleanup ran).
func removeOrphans() {
	for _, kind := range []struct{ ls, rm []string }{
		{[]string{"container", "ls", "-a"}, []string{"rm", "-f"}},
		{[]string{"network", "ls"}, []string{"network", "rm"}},
	} {
		out, err := run("docker", append(kind.ls, "--filter", "label=topkd-testbed", "--format", `{{.ID}} {{.Label "topkd-testbed"}}`)...)
		if err != nil || out == "" {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			id, owner, _ := strings.Cut(line, " ")
			pid, _, _ := strings.Cut(owner, "-")
			if _, err := os.Stat("/proc/" + pid); pid == "" || err == nil {
				continue // its test is still running
			}
			_, _ = run("docker", append(kind.rm, id)...)
		}
	}
}

func (d *docker) ip(i int) string { return fmt.Sprintf("%s.%d", d.subnet, 10+i) }

func (d *docker) Kind() string     { return "docker" }
func (d *docker) Size() int        { return len(d.names) }
func (d *docker) URL(i int) string { return "http://" + d.ip(i) + ":7070" }

func (d *docker) Start(ctx context.Context, i int) error {
	d.opts.Logf("testbed: start %s", NodeID(i))
	if _, err := run("docker", "start", d.names[i]); err != nil {
		return err
	}
	return waitReady(ctx, d.URL(i), nil)
}

func (d *docker) Kill(i int) error {
	d.opts.Logf("testbed: SIGKILL %s", NodeID(i))
	if _, err := run("docker", "kill", "-s", "KILL", d.names[i]); err != nil {
		return err
	}
	_, err := run("docker", "wait", d.names[i])
	return err
}

func (d *docker) Pause(i int) error {
	d.opts.Logf("testbed: pause %s", NodeID(i))
	_, err := run("docker", "pause", d.names[i])
	return err
}

func (d *docker) Resume(i int) error {
	d.opts.Logf("testbed: resume %s", NodeID(i))
	_, err := run("docker", "unpause", d.names[i])
	return err
}

func (d *docker) Isolate(i int) error {
	d.opts.Logf("testbed: isolate %s", NodeID(i))
	_, err := run("docker", "network", "disconnect", "-f", d.net, d.names[i])
	return err
}

func (d *docker) Heal(i int) error {
	d.opts.Logf("testbed: reconnect %s", NodeID(i))
	_, err := run("docker", "network", "connect", "--ip", d.ip(i), d.net, d.names[i])
	return err
}

// Cut drops packets from j in i's network namespace and from i in j's,
// with iptables entered from the host (the image has no shell).
func (d *docker) Cut(i, j int) error {
	d.opts.Logf("testbed: cut %s <-> %s", NodeID(i), NodeID(j))
	for _, p := range [][2]int{{i, j}, {j, i}} {
		if err := d.iptables(p[0], "-A", "INPUT", "-s", d.ip(p[1]), "-j", "DROP"); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.cuts[[2]int{i, j}] = true
	d.mu.Unlock()
	return nil
}

func (d *docker) HealCuts() error {
	d.mu.Lock()
	cuts := d.cuts
	d.cuts = map[[2]int]bool{}
	d.mu.Unlock()
	var first error
	for c := range cuts {
		d.opts.Logf("testbed: heal cut %s <-> %s", NodeID(c[0]), NodeID(c[1]))
		for _, i := range c {
			if err := d.iptables(i, "-F", "INPUT"); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (d *docker) iptables(i int, args ...string) error {
	pid, err := run("docker", "inspect", "-f", "{{.State.Pid}}", d.names[i])
	if err != nil {
		return err
	}
	if pid == "0" {
		return fmt.Errorf("%s is not running", NodeID(i))
	}
	_, err = run("nsenter", append([]string{"-t", pid, "-n", "iptables"}, args...)...)
	return err
}

func (d *docker) PowerOff(int) error { return ErrUnsupported }

func (d *docker) LogTail(i int, n int) string {
	lines := max(200, n/60) // a log line is about 60-200 bytes
	out, _ := exec.Command("docker", "logs", "--tail", fmt.Sprint(lines), d.names[i]).CombinedOutput()
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return string(out)
}

func (d *docker) Close() {
	ids, _ := run("docker", "ps", "-aq", "--filter", "label="+d.label)
	if ids != "" {
		_, _ = run("docker", append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
	}
	_, _ = run("docker", "network", "rm", d.net)
}
