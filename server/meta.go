package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/topkd/topkd/fsm"
	metapb "github.com/topkd/topkd/proto/topkd/meta/v1"
	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

var (
	ErrLeaderboardExists = errors.New("leaderboard already exists")
	ErrNotInitialized    = errors.New("cluster not initialized")
	// ErrUnknownMeta: a meta command from a newer release that this one
	// cannot apply.
	ErrUnknownMeta = errors.New("unknown meta command")
	// ErrStalePlacement: a placement change computed from an older table.
	ErrStalePlacement = errors.New("stale placement")
	// ErrIdentity: a node presents an id that belongs to another data dir.
	ErrIdentity = errors.New("node identity conflict")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// metaFSM is the meta group's state machine: cluster shape, nodes and
// leaderboard definitions. Small; snapshots are the whole state.
type metaFSM struct {
	mu      sync.RWMutex
	st      *metapb.State
	view    *metapb.State // an immutable copy of st, replaced on every change: readers never clone
	changed chan struct{} // closed and replaced on every change
}

// BatchingFSM, not only FSM: raft hands configuration entries only to a
// batching FSM, and the boot wait needs their indexes applied too (a log
// that ends in the bootstrap configuration before Init commits).
var _ raft.BatchingFSM = (*metaFSM)(nil)

// ApplyBatch applies entries one by one; meta entries are rare.
func (m *metaFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		out[i] = m.Apply(l)
	}
	return out
}

func newMetaFSM() *metaFSM {
	return &metaFSM{st: &metapb.State{}, view: &metapb.State{}, changed: make(chan struct{})}
}

// Meta command envelope: magic, version, flags, reserved, CRC32C(payload)
// little-endian, payload (a metapb.Command). Releases before the envelope
// wrote CRC32C(payload) then the payload; decodeMeta still reads those.
const (
	metaMagic         = 'M'
	metaVersion       = 1
	metaEnvelopeSize  = 8
	metaFlagIgnorable = 1 // replicas that do not know the command may skip it
)

func encodeMeta(c *metapb.Command) ([]byte, error) {
	return encodeMetaFlags(c, 0)
}

func encodeMetaFlags(c *metapb.Command, flags byte) ([]byte, error) {
	b, err := proto.Marshal(c)
	if err != nil {
		return nil, err
	}
	out := make([]byte, metaEnvelopeSize, metaEnvelopeSize+len(b))
	out[0], out[1], out[2] = metaMagic, metaVersion, flags
	binary.LittleEndian.PutUint32(out[4:], crc32.Checksum(b, castagnoli))
	return append(out, b...), nil
}

// decodeMeta reads a meta command and its flags. A command of a newer
// envelope version, or of a type this release does not know and may not
// skip, is an error: applying the rest of the log without it would leave
// this replica's state different from the others'.
func decodeMeta(data []byte) (*metapb.Command, error) {
	payload, flags := data, byte(0)
	if len(data) >= metaEnvelopeSize && data[0] == metaMagic && data[1] >= 1 &&
		crc32.Checksum(data[metaEnvelopeSize:], castagnoli) == binary.LittleEndian.Uint32(data[4:]) {
		if data[1] > metaVersion {
			return nil, fmt.Errorf("%w: meta command envelope version %d; this release reads %d (upgrade topkd)", ErrUnknownMeta, data[1], metaVersion)
		}
		payload, flags = data[metaEnvelopeSize:], data[2]
	} else {
		if len(data) < 4 {
			return nil, fmt.Errorf("%w: meta command of %d bytes", fsm.ErrCorrupt, len(data))
		}
		if crc32.Checksum(data[4:], castagnoli) != binary.LittleEndian.Uint32(data) {
			return nil, fmt.Errorf("%w: meta command checksum", fsm.ErrCorrupt)
		}
		payload = data[4:]
	}
	c := &metapb.Command{}
	if err := proto.Unmarshal(payload, c); err != nil {
		return nil, fmt.Errorf("%w: meta command: %v", fsm.ErrCorrupt, err)
	}
	if c.Cmd == nil && flags&metaFlagIgnorable == 0 {
		return nil, fmt.Errorf("%w: a meta command this release does not know (upgrade topkd)", ErrUnknownMeta)
	}
	return c, nil
}

// Apply implements raft.FSM. Results are an error or a *pb.LeaderboardConfig.
func (m *metaFSM) Apply(l *raft.Log) interface{} {
	m.mu.Lock()
	defer func() {
		m.st.AppliedIndex = l.Index
		m.view = proto.Clone(m.st).(*metapb.State) // meta entries are rare; ingest and queries read view
		close(m.changed)
		m.changed = make(chan struct{})
		m.mu.Unlock()
	}()
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := decodeMeta(l.Data)
	if err != nil {
		panic(fmt.Sprintf("topkd meta: apply index %d: %v", l.Index, err))
	}
	if c.Cmd == nil {
		return nil // a newer release's command, marked safe to skip
	}
	switch x := c.Cmd.(type) {
	case *metapb.Command_Init:
		if m.st.Partitions != 0 {
			return fmt.Errorf("cluster %s already initialized", m.st.ClusterId)
		}
		m.st.ClusterId, m.st.Partitions = x.Init.ClusterId, x.Init.Partitions
		if x.Init.FirstNode != nil {
			m.st.Nodes = append(m.st.Nodes, x.Init.FirstNode)
		}
		m.st.Nodes = append(m.st.Nodes, x.Init.OtherNodes...)
		m.st.Leaderboards = append(m.st.Leaderboards, fsm.DefaultLeaderboard(l.Index))
		return nil
	case *metapb.Command_AddNode:
		return m.addNode(x.AddNode.Node)
	case *metapb.Command_SetLeaving:
		for _, nd := range m.st.Nodes {
			if nd.Id == x.SetLeaving.Id {
				nd.Leaving = true
				return nil
			}
		}
		return fmt.Errorf("%w: no member %q", ErrInvalid, x.SetLeaving.Id)
	case *metapb.Command_SetDown:
		for _, nd := range m.st.Nodes {
			if nd.Id == x.SetDown.Id {
				nd.Down = x.SetDown.Down
				return nil
			}
		}
		return nil // removed meanwhile
	case *metapb.Command_RemoveNode:
		for i, nd := range m.st.Nodes {
			if nd.Id == x.RemoveNode.Id {
				m.st.Nodes = slices.Delete(m.st.Nodes, i, i+1)
				return nil
			}
		}
		return nil // removed already: idempotent
	case *metapb.Command_SetPlacement:
		if x.SetPlacement.Epoch != m.st.PlacementEpoch {
			return fmt.Errorf("%w: placement epoch %d, the table is at %d", ErrStalePlacement, x.SetPlacement.Epoch, m.st.PlacementEpoch)
		}
		if len(x.SetPlacement.Partitions) != int(m.st.Partitions) {
			return fmt.Errorf("%w: placement of %d partitions, the cluster has %d", ErrInvalid, len(x.SetPlacement.Partitions), m.st.Partitions)
		}
		m.st.Placement = x.SetPlacement.Partitions
		m.st.PlacementEpoch++
		return nil
	case *metapb.Command_StartMove:
		return m.startMove(x.StartMove)
	case *metapb.Command_AdvanceMove:
		if mv := m.move(x.AdvanceMove.Partition, x.AdvanceMove.Id); mv != nil && x.AdvanceMove.Step > mv.Step {
			mv.Step = x.AdvanceMove.Step
		}
		return nil
	case *metapb.Command_FinishMove:
		m.st.Moves = slices.DeleteFunc(m.st.Moves, func(mv *metapb.Move) bool {
			return mv.Partition == x.FinishMove.Partition && mv.Id == x.FinishMove.Id
		})
		return nil
	case *metapb.Command_PutLeaderboard:
		return m.put(x.PutLeaderboard, l.Index)
	case *metapb.Command_DropLeaderboard:
		if x.DropLeaderboard.Name == "default" {
			// The admin path refuses this too; the group is the last line.
			return fmt.Errorf("%w: the default leaderboard cannot be dropped", ErrInvalid)
		}
		for i, lb := range m.st.Leaderboards {
			if lb.Name == x.DropLeaderboard.Name {
				m.st.Leaderboards = slices.Delete(m.st.Leaderboards, i, i+1)
				m.tombstone(lb.Name, lb.Incarnation)
				return nil
			}
		}
		return fmt.Errorf("%w %q", fsm.ErrUnknownLeaderboard, x.DropLeaderboard.Name)
	}
	return fmt.Errorf("empty meta command at index %d", l.Index)
}

// startMove records a move and points the partition's placement entry at
// its target.
func (m *metaFSM) startMove(c *metapb.StartMove) interface{} {
	mv := c.Move
	if c.Epoch != m.st.PlacementEpoch {
		return fmt.Errorf("%w: placement epoch %d, the table is at %d", ErrStalePlacement, c.Epoch, m.st.PlacementEpoch)
	}
	if mv == nil || int(mv.Partition) >= len(m.st.Placement) || len(mv.To) == 0 {
		return fmt.Errorf("%w: a move needs a partition of the placement table and a target", ErrInvalid)
	}
	if cur := m.moveOf(mv.Partition); cur != nil {
		if !c.Supersede {
			return fmt.Errorf("%w: partition %d is already moving", ErrStalePlacement, mv.Partition)
		}
		m.st.Moves = slices.DeleteFunc(m.st.Moves, func(x *metapb.Move) bool { return x == cur })
	}
	mv.Id, mv.Step = m.st.PlacementEpoch, metapb.MoveStep_MOVE_STEP_ADDING
	m.st.Placement[mv.Partition] = &metapb.PartitionReplicas{Nodes: slices.Clone(mv.To)}
	m.st.Moves = append(m.st.Moves, mv)
	m.st.PlacementEpoch++
	return nil
}

func (m *metaFSM) moveOf(p uint32) *metapb.Move {
	for _, mv := range m.st.Moves {
		if mv.Partition == p {
			return mv
		}
	}
	return nil
}

func (m *metaFSM) move(p uint32, id uint64) *metapb.Move {
	if mv := m.moveOf(p); mv != nil && mv.Id == id {
		return mv
	}
	return nil
}

// addNode admits a node, or updates the addresses of a member that joins
// again with the same data dir. The same id with another store id is a
// node whose data was wiped: it is refused while the old one is a member.
func (m *metaFSM) addNode(n *metapb.Node) interface{} {
	if m.st.Partitions == 0 {
		return ErrNotInitialized
	}
	if n == nil || n.Id == "" {
		return fmt.Errorf("%w: a node to add needs an id", ErrInvalid)
	}
	for i, old := range m.st.Nodes {
		if old.Id != n.Id {
			continue
		}
		if old.StoreId != "" && old.StoreId != n.StoreId {
			return fmt.Errorf("%w: node %s is a member with another data directory (store %s, this one %s): it must be removed before a node with new data joins under its id",
				ErrIdentity, n.Id, old.StoreId, n.StoreId)
		}
		m.st.Nodes[i] = proto.Clone(n).(*metapb.Node)
		return nil
	}
	m.st.Nodes = append(m.st.Nodes, proto.Clone(n).(*metapb.Node))
	return nil
}

func (m *metaFSM) tombstone(name string, inc uint64) {
	for _, t := range m.st.Tombstones {
		if t.Name == name {
			t.Incarnation = max(t.Incarnation, inc)
			return
		}
	}
	m.st.Tombstones = append(m.st.Tombstones, &pb.Tombstone{Name: name, Incarnation: inc})
}

func (m *metaFSM) put(p *metapb.PutLeaderboard, index uint64) interface{} {
	if m.st.Partitions == 0 {
		return ErrNotInitialized
	}
	c := proto.Clone(p.Config).(*pb.LeaderboardConfig)
	for i, old := range m.st.Leaderboards {
		if old.Name != c.Name {
			continue
		}
		if p.CreateOnly {
			return fmt.Errorf("%w: %q", ErrLeaderboardExists, c.Name)
		}
		c.Incarnation, c.Version = old.Incarnation, old.Version+1
		if err := fsm.NormalizeConfig(c); err != nil {
			return err
		}
		if err := fsm.CheckUpdate(old, c); err != nil { // partitions would refuse it: keep meta in step
			return err
		}
		m.st.Leaderboards[i] = c
		return proto.Clone(c)
	}
	if p.MaxLeaderboards > 0 && len(m.st.Leaderboards) >= int(p.MaxLeaderboards) {
		return leaderboardLimit(len(m.st.Leaderboards))
	}
	c.Incarnation, c.Version = index, 1
	if err := fsm.NormalizeConfig(c); err != nil {
		return err
	}
	m.st.Leaderboards = append(m.st.Leaderboards, c)
	slices.SortFunc(m.st.Leaderboards, func(a, b *pb.LeaderboardConfig) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return proto.Clone(c)
}

// state returns the meta state and a channel closed on its next change.
// The state is shared and immutable: callers must not modify it.
func (m *metaFSM) state() (*metapb.State, <-chan struct{}) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.view, m.changed
}

func (m *metaFSM) Snapshot() (raft.FSMSnapshot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, err := proto.Marshal(m.st)
	if err != nil {
		return nil, err
	}
	return metaSnapshot(binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))), nil
}

func (m *metaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read meta snapshot: %w", err)
	}
	if len(b) < 4 || crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("%w: meta snapshot checksum", fsm.ErrCorrupt)
	}
	st := &metapb.State{}
	if err := proto.Unmarshal(b[:len(b)-4], st); err != nil {
		return fmt.Errorf("%w: meta snapshot: %v", fsm.ErrCorrupt, err)
	}
	m.mu.Lock()
	m.st = st
	m.view = proto.Clone(st).(*metapb.State)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	return nil
}

type metaSnapshot []byte

func (s metaSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (metaSnapshot) Release() {}

// AppliedIndex is the last index the meta FSM applied.
func (m *metaFSM) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.AppliedIndex
}

// WaitApplied blocks until the meta FSM applied idx or ctx ends.
func (m *metaFSM) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		m.mu.RLock()
		applied, ch := m.st.AppliedIndex, m.changed
		m.mu.RUnlock()
		if applied >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for meta index %d (at %d): %w", idx, applied, ctx.Err())
		}
	}
}
