package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/topkd/topkd/fsm"
	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
)

func applyMetaCmd(t *testing.T, m *metaFSM, index uint64, c *metapb.Command) interface{} {
	t.Helper()
	data, err := encodeMeta(c)
	if err != nil {
		t.Fatal(err)
	}
	return m.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
}

// The envelope round-trips; the format before it still decodes; a newer
// version, an unknown command and damage are refused; an unknown command
// flagged ignorable is skipped.
func TestMetaEnvelope(t *testing.T) {
	c := &metapb.Command{Cmd: &metapb.Command_SetLeaving{SetLeaving: &metapb.SetLeaving{Id: "n2"}}}
	data, err := encodeMeta(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeMeta(data); err != nil || !proto.Equal(got, c) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	b, _ := proto.Marshal(c)
	legacy := binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b, castagnoli))
	if got, err := decodeMeta(append(legacy, b...)); err != nil || !proto.Equal(got, c) {
		t.Fatalf("legacy format: %v, %v", got, err)
	}
	newer := bytes.Clone(data)
	newer[1] = metaVersion + 1
	if _, err := decodeMeta(newer); !errors.Is(err, ErrUnknownMeta) {
		t.Errorf("newer version: %v, want ErrUnknownMeta", err)
	}
	damaged := bytes.Clone(data)
	damaged[len(damaged)-1] ^= 0xff
	if _, err := decodeMeta(damaged); !errors.Is(err, fsm.ErrCorrupt) {
		t.Errorf("damaged: %v, want ErrCorrupt", err)
	}
	// A command of a later release: a oneof field this one lacks.
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte{8, 1})
	frame := func(flags byte) []byte {
		out := []byte{metaMagic, metaVersion, flags, 0}
		out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(unknown, castagnoli))
		return append(out, unknown...)
	}
	if _, err := decodeMeta(frame(0)); !errors.Is(err, ErrUnknownMeta) {
		t.Errorf("unknown command: %v, want ErrUnknownMeta", err)
	}
	m := newMetaFSM()
	if res := m.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: frame(metaFlagIgnorable)}); res != nil {
		t.Errorf("ignorable unknown command: %v", res)
	}
	if m.AppliedIndex() != 1 {
		t.Errorf("applied index %d after a skipped command", m.AppliedIndex())
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

// A meta snapshot restores the whole state (members, placement, moves,
// leaderboards) into a new state machine; a damaged one is refused.
func TestMetaSnapshotRestore(t *testing.T) {
	m := newMetaFSM()
	cmds := []*metapb.Command{
		{Cmd: &metapb.Command_Init{Init: &metapb.InitCluster{ClusterId: "c1", Partitions: 2,
			FirstNode: &metapb.Node{Id: "n1", RaftAddr: "r1", HttpAddr: "h1", StoreId: "s1"}}}},
		{Cmd: &metapb.Command_AddNode{AddNode: &metapb.AddNode{Node: &metapb.Node{Id: "n2", RaftAddr: "r2", HttpAddr: "h2", StoreId: "s2"}}}},
		{Cmd: &metapb.Command_SetPlacement{SetPlacement: &metapb.SetPlacement{Epoch: 0, Partitions: []*metapb.PartitionReplicas{
			{Nodes: []string{"n1"}}, {Nodes: []string{"n1"}}}}}},
		{Cmd: &metapb.Command_StartMove{StartMove: &metapb.StartMove{Epoch: 1, Move: &metapb.Move{Partition: 1,
			From: []string{"n1"}, To: []string{"n2", "n1"}}}}},
		{Cmd: &metapb.Command_AdvanceMove{AdvanceMove: &metapb.AdvanceMove{Partition: 1, Id: 1, Step: metapb.MoveStep_MOVE_STEP_PROMOTED}}},
		{Cmd: &metapb.Command_SetDown{SetDown: &metapb.SetDown{Id: "n2", Down: true}}},
	}
	for i, c := range cmds {
		if err, ok := applyMetaCmd(t, m, uint64(i+1), c).(error); ok {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	st, _ := m.state()
	if len(st.Moves) != 1 || st.Moves[0].Step != metapb.MoveStep_MOVE_STEP_PROMOTED || st.PlacementEpoch != 2 {
		t.Fatalf("state before the snapshot: %v", st)
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	restored := newMetaFSM()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	got, _ := restored.state()
	if !proto.Equal(got, st) {
		t.Fatalf("restored %v\nwant %v", got, st)
	}
	// The restored machine goes on: the move finishes.
	applyMetaCmd(t, restored, 7, &metapb.Command{Cmd: &metapb.Command_FinishMove{FinishMove: &metapb.FinishMove{Partition: 1, Id: 1}}})
	if got, _ := restored.state(); len(got.Moves) != 0 || got.Placement[1].Nodes[0] != "n2" {
		t.Errorf("after FinishMove: %v", got)
	}
	damaged := bytes.Clone(sink.Bytes())
	damaged[3] ^= 0x40
	if err := newMetaFSM().Restore(io.NopCloser(bytes.NewReader(damaged))); !errors.Is(err, fsm.ErrCorrupt) {
		t.Errorf("damaged snapshot: %v, want ErrCorrupt", err)
	}
}

// A move is refused at a stale epoch and while its partition is moving,
// unless it supersedes.
func TestMetaMoveRules(t *testing.T) {
	m := newMetaFSM()
	applyMetaCmd(t, m, 1, &metapb.Command{Cmd: &metapb.Command_Init{Init: &metapb.InitCluster{ClusterId: "c", Partitions: 1,
		FirstNode: &metapb.Node{Id: "n1"}}}})
	applyMetaCmd(t, m, 2, &metapb.Command{Cmd: &metapb.Command_SetPlacement{SetPlacement: &metapb.SetPlacement{
		Partitions: []*metapb.PartitionReplicas{{Nodes: []string{"n1"}}}}}})
	start := func(i uint64, epoch uint64, to []string, supersede bool) interface{} {
		return applyMetaCmd(t, m, i, &metapb.Command{Cmd: &metapb.Command_StartMove{StartMove: &metapb.StartMove{Epoch: epoch,
			Move: &metapb.Move{Partition: 0, From: []string{"n1"}, To: to}, Supersede: supersede}}})
	}
	if err, _ := start(3, 0, []string{"n1", "n2"}, false).(error); !errors.Is(err, ErrStalePlacement) {
		t.Errorf("stale epoch: %v", err)
	}
	if res := start(4, 1, []string{"n1", "n2"}, false); res != nil {
		t.Fatalf("start: %v", res)
	}
	if err, _ := start(5, 2, []string{"n1", "n3"}, false).(error); !errors.Is(err, ErrStalePlacement) {
		t.Errorf("second move of a moving partition: %v", err)
	}
	if res := start(6, 2, []string{"n1", "n3"}, true); res != nil {
		t.Fatalf("supersede: %v", res)
	}
	st, _ := m.state()
	if len(st.Moves) != 1 || st.Moves[0].To[1] != "n3" || st.Placement[0].Nodes[1] != "n3" {
		t.Errorf("after supersede: %v", st)
	}
}
