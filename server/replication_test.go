package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/topkd/topkd/fsm"
	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

func testPolicy() RaftPolicy {
	p := DefaultRaftPolicy()
	p.HeartbeatTimeout, p.ElectionTimeout = 100*time.Millisecond, 100*time.Millisecond
	return p
}

func quietLog() *slog.Logger {
	if os.Getenv("TOPKD_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestMuxReplicatesThreeVoters replicates the meta group and two partition
// groups to three voters over three real muxed Raft ports on loopback.
func TestMuxReplicatesThreeVoters(t *testing.T) {
	const nodes = 3
	var muxes []*Mux
	var servers []raft.Server
	for i := 0; i < nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := NewMux(ln, nil, quietLog())
		t.Cleanup(func() { m.Close() })
		muxes = append(muxes, m)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("n%d", i)),
			Address: raft.ServerAddress(ln.Addr().String())})
	}
	type replica struct {
		g   *group
		fsm readFSM
	}
	groups := map[uint32][]replica{}
	for _, gid := range []uint32{MetaGroup, PartitionGroup(0), PartitionGroup(1)} {
		for i := 0; i < nodes; i++ {
			var f readFSM
			if gid == MetaGroup {
				f = newMetaFSM()
			} else {
				f = fsm.New(fsm.Options{})
			}
			g, err := openGroup(groupConfig{id: gid, name: fmt.Sprintf("g%d-n%d", gid, i), dir: t.TempDir(),
				nodeID: fmt.Sprintf("n%d", i), layer: muxes[i], fsm: f, policy: testPolicy(), log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.close() })
			if err := g.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
				t.Fatalf("bootstrap group %d on n%d: %v", gid, i, err)
			}
			groups[gid] = append(groups[gid], replica{g, f})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leaderOf := func(gid uint32) replica {
		t.Helper()
		for {
			for _, r := range groups[gid] {
				if r.g.isLeader() {
					return r
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("group %d elected no leader", gid)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	// apply retries on "outcome unknown" (leadership lost): every command here is idempotent.
	apply := func(gid uint32, data []byte) {
		t.Helper()
		for {
			err := leaderOf(gid).g.raft.Apply(data, 5*time.Second).Error()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("group %d: apply: %v", gid, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Meta: initialize and create a leaderboard.
	for _, c := range []*metapb.Command{
		{Cmd: &metapb.Command_Init{Init: &metapb.InitCluster{ClusterId: "c", Partitions: 2}}},
		{Cmd: &metapb.Command_PutLeaderboard{PutLeaderboard: &metapb.PutLeaderboard{Config: &pb.LeaderboardConfig{Name: "plays"}}}},
	} {
		data, err := encodeMeta(c)
		if err != nil {
			t.Fatal(err)
		}
		apply(MetaGroup, data)
	}
	// Partitions: config, then ingest through each group's leader.
	want := map[string]int64{}
	for p := 0; p < 2; p++ {
		gid := PartitionGroup(p)
		data, _ := fsm.EncodeConfig(fsm.DefaultLeaderboard(1))
		apply(gid, data)
		for seq := uint64(1); seq <= 50; seq++ {
			item := fmt.Sprintf("item-%d-%d", p, seq%7)
			want[item] += int64(seq)
			e := &pb.IngestEntry{LeaderTimeMs: 1_700_000_000_000 + int64(seq), Parts: []*pb.ProducerPart{{
				ProducerId: "prod", Epoch: 1, Sequence: seq, Boards: []*pb.LeaderboardDeltas{{
					Leaderboard: "default", Incarnation: 1, Items: []string{item}, Deltas: []int64{int64(seq)}, EventTimesS: []int64{0}}}}}}
			data, _ := fsm.EncodeIngest(e)
			apply(gid, data)
		}
		data, _ = fsm.EncodeChecksum(&pb.Checksum{Id: 1})
		apply(gid, data)
	}
	// Every replica converges: same counts, same digest at the same index.
	for p := 0; p < 2; p++ {
		reps := groups[PartitionGroup(p)]
		last := leaderOf(PartitionGroup(p)).g.raft.LastIndex()
		var digests []fsm.ChecksumRecord
		for i, r := range reps {
			if err := r.g.waitFSM(ctx, last); err != nil {
				t.Fatalf("partition %d replica n%d: %v", p, i, err)
			}
			f := r.fsm.(*fsm.FSM)
			for item, c := range want {
				if PartitionGroup(p) != PartitionGroup(int(item[5]-'0')) {
					continue
				}
				got, err := f.Count("default", item, 0)
				if err != nil || got.Count != c {
					t.Errorf("partition %d replica n%d: count(%s) = %d, %v; want %d", p, i, item, got.Count, err, c)
				}
			}
			cs := f.Checksums() // a retried checksum command may have committed twice
			if len(cs) == 0 {
				t.Fatalf("partition %d replica n%d: no checksum recorded", p, i)
			}
			digests = append(digests, cs[len(cs)-1])
		}
		for i := 1; i < len(digests); i++ {
			if digests[i] != digests[0] {
				t.Errorf("partition %d: replica n%d digest %+v, n0 %+v", p, i, digests[i], digests[0])
			}
		}
	}
	for i, r := range groups[MetaGroup] {
		if err := r.g.waitFSM(ctx, leaderOf(MetaGroup).g.raft.LastIndex()); err != nil {
			t.Fatal(err)
		}
		st, _ := r.fsm.(*metaFSM).state()
		if st.Partitions != 2 || len(st.Leaderboards) != 2 {
			t.Errorf("meta replica n%d: %d partitions, %d leaderboards; want 2, 2", i, st.Partitions, len(st.Leaderboards))
		}
	}
}
