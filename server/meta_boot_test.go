package server

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A node that stopped after the meta group's bootstrap and election but
// before Init committed must boot again: its log ends in the bootstrap
// configuration, a no-op and a barrier, and the boot wait needs the meta
// FSM to have applied the configuration entry (only a batching FSM sees it).
func TestMetaBootAfterCrashBeforeInit(t *testing.T) {
	dir := t.TempDir()
	open := func() (*Mux, *group, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := NewMux(ln, nil, quietLog())
		g, err := openGroup(groupConfig{id: MetaGroup, name: "meta", dir: filepath.Join(dir, "meta"), nodeID: "n1",
			layer: m, fsm: newMetaFSM(), policy: testPolicy(), log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		return m, g, ln.Addr().String()
	}
	m, g, addr := open()
	if err := g.bootstrap([]raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: raft.ServerAddress(addr)}}); err != nil {
		t.Fatal(err)
	}
	for !g.isLeader() { // election + barrier done: log = config(1), noop(2), barrier(3)
		time.Sleep(10 * time.Millisecond)
	}
	last, _ := g.store.LastIndex()
	t.Logf("log before 'crash': last index %d, meta FSM applied %d", last, g.fsm.AppliedIndex())
	g.close()
	m.Close()

	m, g, _ = open()
	defer func() { g.close(); m.Close() }()
	for !g.isLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := g.waitBoot(ctx)
	t.Logf("bootIndex=%d applied=%d waitBoot err=%v", g.bootIndex, g.fsm.AppliedIndex(), err)
	if err != nil {
		t.Errorf("meta waitBoot never completes after restart: %v (openMeta would block forever before proposing Init)", err)
	}
}
