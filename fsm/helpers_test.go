package fsm

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// logFeeder applies commands to an FSM with consecutive raft indexes.
type logFeeder struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newFeeder(t testing.TB) *logFeeder {
	t.Helper()
	return &logFeeder{t: t, f: New(Options{})}
}

// newTunedFeeder is newFeeder with edit applied to the default tuning.
func newTunedFeeder(t testing.TB, edit func(*tuning)) *logFeeder {
	t.Helper()
	tune := defaultTuning
	edit(&tune)
	return &logFeeder{t: t, f: New(Options{tune: &tune})}
}

func (lf *logFeeder) raw(data []byte) interface{} {
	lf.t.Helper()
	lf.index++
	return lf.f.Apply(&raft.Log{Index: lf.index, Term: 1, Type: raft.LogCommand, Data: data})
}

func mustEncode(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func (lf *logFeeder) config(c *pb.LeaderboardConfig) error {
	lf.t.Helper()
	r := lf.raw(mustEncode(EncodeConfig(c)))
	if err, ok := r.(error); ok {
		return err
	}
	return nil
}

func (lf *logFeeder) ingest(e *pb.IngestEntry) *IngestResult {
	lf.t.Helper()
	r := lf.raw(mustEncode(EncodeIngest(e)))
	res, ok := r.(*IngestResult)
	if !ok {
		lf.t.Fatalf("ingest returned %T %v", r, r)
	}
	return res
}

func (lf *logFeeder) tick(ms int64, wms ...*pb.Watermark) {
	lf.t.Helper()
	lf.raw(mustEncode(EncodeTick(&pb.Tick{LeaderTimeMs: ms, Watermarks: wms})))
}

// ev is one delta for tests: item, delta, event time (unix seconds, 0 = untimed).
type ev struct {
	item  string
	delta int64
	ts    int64
}

func deltas(board string, inc uint64, evs ...ev) *pb.LeaderboardDeltas {
	d := &pb.LeaderboardDeltas{Leaderboard: board, Incarnation: inc}
	for _, e := range evs {
		d.Items = append(d.Items, e.item)
		d.Deltas = append(d.Deltas, e.delta)
		d.EventTimesS = append(d.EventTimesS, e.ts)
	}
	return d
}

func part(producer string, epoch, seq uint64, ds ...*pb.LeaderboardDeltas) *pb.ProducerPart {
	return &pb.ProducerPart{ProducerId: producer, Epoch: epoch, Sequence: seq, Boards: ds}
}

// snapshotBytes persists the FSM's snapshot into memory.
func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// ex is an exact-mode item: its bounds equal its count.
func ex(item string, c int64) Item { return Item{Item: item, Count: c, Lower: c, Upper: c} }

// offHeapSlack is the part of OffHeapBytes in free blocks of shared slabs
// and in spare slabs.
func offHeapSlack() int64 {
	off.mu.Lock()
	defer off.mu.Unlock()
	return off.slack
}

func (x *itemIndex) len() int { return x.n }

// EncodeRaw frames an arbitrary payload; tests use it for unknown and ignorable types.
func EncodeRaw(t CommandType, ignorable bool, payload []byte) []byte {
	var flags byte
	if ignorable {
		flags = flagIgnorable
	}
	buf := make([]byte, envelopeSize+len(payload))
	buf[0], buf[1], buf[2] = envelopeVersion, byte(t), flags
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, castagnoli))
	copy(buf[envelopeSize:], payload)
	return buf
}
