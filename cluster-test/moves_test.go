package clustertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// nodeStatus is the part of GET /api/status these tests read.
type nodeStatus struct {
	NodeID     string            `json:"node_id"`
	MetaLeader string            `json:"meta_leader"`
	Partitions []partitionState  `json:"partitions"`
	Moves      []json.RawMessage `json:"moves"`
}

type partitionState struct {
	Partition    int      `json:"partition"`
	State        string   `json:"state"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LocalApplied uint64   `json:"local_applied_index"`
	Placement    []string `json:"placement"`
	Voters       []string `json:"voters"`
	NonVoters    []string `json:"non_voters"`
}

func (p *proc) status() (nodeStatus, error) {
	var st nodeStatus
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(p.url() + "/api/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// armFailpoint arms points in a running failpoint build (PUT /debug/failpoints).
func (p *proc) armFailpoint(t *testing.T, spec string) {
	t.Helper()
	if err := p.armFailpointErr(spec); err != nil {
		t.Fatal(err)
	}
}

func (p *proc) armFailpointErr(spec string) error {
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.debug+"/debug/failpoints", strings.NewReader(spec))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("arm %q on %s: status %d", spec, p.http, resp.StatusCode)
	}
	return nil
}

// startMember starts a cluster member: the first creates the cluster, the
// others join it through its gossip address.
func startMember(t *testing.T, bin, id string, first *proc) *proc {
	t.Helper()
	p := newProc(t)
	p.bin = bin
	p.args = []string{"--node-id", id, "--replicas", "3"}
	if first != nil {
		p.args = append(p.args, "--join", first.gossip)
	}
	p.start()
	return p
}

// converged reports whether the cluster of procs has no move in flight,
// every partition's leader has exactly its placement as voters, each of
// the n nodes holds replicas of want partitions, and no node keeps the
// data of a partition placed elsewhere.
func converged(procs []*proc, want int) error {
	led := map[int]bool{}
	held := map[string]int{}
	for _, p := range procs {
		st, err := p.status()
		if err != nil {
			return err
		}
		if len(st.Moves) > 0 {
			return fmt.Errorf("%s: %d moves in flight", st.NodeID, len(st.Moves))
		}
		for _, ps := range st.Partitions {
			if ps.State == "NotPlaced" {
				if ps.LocalApplied != 0 {
					return fmt.Errorf("%s: partition %d is placed elsewhere but keeps data (applied %d)", st.NodeID, ps.Partition, ps.LocalApplied)
				}
				continue
			}
			held[st.NodeID]++
			if ps.State != "Leader" {
				continue
			}
			v, pl := slices.Clone(ps.Voters), slices.Clone(ps.Placement)
			slices.Sort(v)
			slices.Sort(pl)
			if !slices.Equal(v, pl) || len(ps.NonVoters) > 0 {
				return fmt.Errorf("partition %d: voters %v non-voters %v, placement %v", ps.Partition, ps.Voters, ps.NonVoters, ps.Placement)
			}
			led[ps.Partition] = true
		}
	}
	if len(led) != 4 {
		return fmt.Errorf("partitions led: %v", led)
	}
	for _, p := range procs {
		st, _ := p.status()
		if held[st.NodeID] != want {
			return fmt.Errorf("replicas per node %v, want %d each", held, want)
		}
	}
	return nil
}

func waitConverged(t *testing.T, procs []*proc, want int, within time.Duration) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = converged(procs, want); err == nil {
			return
		}
	}
	t.Fatalf("not converged within %v: %v", within, err)
}

// TestMoveCrashAtEachStep: a fourth node joins a three-node cluster
// (R = 3, 4 partitions), so three replicas move to it, while producers
// ingest exactly-once through every node. The process reaching the armed
// step first is SIGKILLed there: the meta leader right after it recorded a
// move started, its new replicas promoted, or the move finished; a node
// about to delete a moved replica's data, or halfway through deleting it.
// After a restart of the victim, placement converges (every move resumes
// or is superseded), no node keeps data placed elsewhere, every node
// answers the exact counts, and the replicas' digests agree.
func TestMoveCrashAtEachStep(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four-node clusters with failpoints; skipped with -short")
	}
	bin := failpointBin(t)
	for _, point := range []string{"move-started", "move-promoted", "move-finished", "drop-replica", "drop-replica-half"} {
		t.Run(point, func(t *testing.T) {
			n1 := startMember(t, bin, "n1", nil)
			procs := []*proc{n1, startMember(t, bin, "n2", n1), startMember(t, bin, "n3", n1)}
			waitConverged(t, procs, 4, 60*time.Second)

			ps := startProducers(3, 200, 7, procs)
			// The meta leader records moves: arm it alone for those points
			// (a second leader would reach the point too); every node may drop.
			armed := procs
			if strings.HasPrefix(point, "move-") {
				st, err := n1.status()
				if err != nil {
					t.Fatal(err)
				}
				armed = nil
				for _, p := range procs {
					if p.args[1] == st.MetaLeader {
						armed = append(armed, p)
					}
				}
			}
			for _, p := range armed {
				p.armFailpoint(t, point+"=kill@1")
			}
			n4 := startMember(t, bin, "n4", n1)
			all := append(slices.Clone(procs), n4)
			ps.sendTo(all)
			waitAnyExit(t, armed, 60*time.Second)
			// Disarm the others; a node that reached the point meanwhile
			// (drops run on several nodes at once) is a victim too.
			for _, p := range armed {
				if p.armFailpointErr(point+"=off") != nil {
					<-p.exited
				}
			}
			for _, p := range armed {
				select {
				case <-p.exited:
					t.Logf("%s killed at %s", p.args[1], point)
					p.start() // unarmed: a new process
				default:
				}
			}
			waitConverged(t, all, 3, 90*time.Second)
			ps.waitAcked(t, 10, 30*time.Second)
			ps.stop(t)
			for _, p := range all {
				checkExact(t, p, ps.led.want)
			}
			verifyAll(t, n4)
			t.Logf("%d batches acknowledged; converged, exact on 4 nodes, replicas agree", ps.acked.Load())
		})
	}
}

// waitAnyExit waits until one of procs has exited.
func waitAnyExit(t *testing.T, procs []*proc, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, p := range procs {
			select {
			case <-p.exited:
				return
			default:
			}
		}
	}
	t.Fatalf("no process reached the failpoint within %v", within)
}
