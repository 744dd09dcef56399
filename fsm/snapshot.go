package fsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"slices"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
)

// Snapshot stream: magic, format version, then records of
// (type byte, uvarint length, protobuf payload), in canonical order:
// header, counters, per leaderboard by name (state, item chunks by id,
// bucket chunks by window and index), producers by id, tombstones by name,
// and a trailer (type 0xFF, CRC32C of every byte before it, type byte included).
const (
	snapMagic         = "TOPKSNAP"
	snapFormat uint32 = 1

	recHeader    = 1
	recCounters  = 2
	recBoard     = 3
	recItems     = 4
	recBucket    = 5
	recProducer  = 6
	recTombstone = 7
	// Approximate boards: after their recBoard, per window a recApproxWindow
	// and its recApproxBucket records (approx_snapshot.go).
	recApproxWindow = 8
	recApproxBucket = 9
	recTrailer      = 0xFF

	maxRecord = 64 << 20
)

type snapshot struct {
	header     *pb.SnapshotHeader
	counters   *pb.SnapshotCounters
	boards     []snapBoard
	producers  []*pb.ProducerState
	tombstones []*pb.Tombstone
}

type snapBoard struct {
	st   *pb.LeaderboardState
	body boardSnap
}

// boardSnap is a board's frozen state; its records follow the board's
// recBoard record.
type boardSnap interface{ write(rw *recWriter) error }

// boardRestore rebuilds a board from the records that follow its recBoard
// record, checking their order itself.
type boardRestore interface {
	record(m proto.Message) error
	finish() error
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

func cloneConfig(c *pb.LeaderboardConfig) *pb.LeaderboardConfig {
	return proto.Clone(c).(*pb.LeaderboardConfig)
}

// capture freezes the state; it is O(leaderboards + buckets + chunks + producers).
func (st *state) capture() *snapshot {
	s := &snapshot{
		header: &pb.SnapshotHeader{FormatVersion: snapFormat, AppliedIndex: st.appliedIndex, LogTimeMs: st.logMs,
			Leaderboards: uint32(len(st.boards)), Producers: uint32(len(st.dedupe.producers))},
		counters: proto.Clone(&st.counters).(*pb.SnapshotCounters),
	}
	for _, name := range st.sortedBoards() {
		lb := st.boards[name]
		b := snapBoard{st: &pb.LeaderboardState{Config: cloneConfig(lb.cfg), MaxEventTimeMs: lb.maxEventMs,
			RejectedOverflow: lb.rejectedOF, AcceptedEvents: lb.accepted, LateDropped: slices.Clone(lb.late), ClockMs: lb.clockMs}}
		b.body = lb.counts.capture(b.st)
		s.boards = append(s.boards, b)
	}
	for _, id := range st.dedupe.sortedIDs() {
		s.producers = append(s.producers, st.dedupe.producers[id].state())
	}
	names := make([]string, 0, len(st.tombstones))
	for n := range st.tombstones {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s.tombstones = append(s.tombstones, &pb.Tombstone{Name: n, Incarnation: st.tombstones[n]})
	}
	return s
}

func (p *producer) state() *pb.ProducerState {
	ps := &pb.ProducerState{ProducerId: p.id, Epoch: p.epoch, High: p.high, SeenBits: p.seen[:], LastSeenMs: p.lastSeen}
	ps.SeenBits = slices.Clone(p.seen[:])
	if !p.any {
		ps.SeenBits = nil
		return ps
	}
	for d := uint64(dedupeWindow); d > 0; d-- {
		if d-1 > p.high {
			continue
		}
		seq := p.high - (d - 1)
		if o := p.outcome(seq); o != nil {
			ps.Outcomes = append(ps.Outcomes, o)
		}
	}
	return ps
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriterSize(sink, 1<<20)
	if err := s.write(bw); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; frozen chunks are garbage collected.
func (s *snapshot) Release() {}

type recWriter struct {
	w   io.Writer
	crc hash.Hash32
	buf []byte
	mo  proto.MarshalOptions
}

func (rw *recWriter) raw(p []byte) error {
	rw.crc.Write(p)
	_, err := rw.w.Write(p)
	return err
}

func (rw *recWriter) record(t byte, m proto.Message) error {
	var err error
	rw.buf, err = rw.mo.MarshalAppend(rw.buf[:0], m)
	if err != nil {
		return err
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = t
	n := binary.PutUvarint(hdr[1:], uint64(len(rw.buf)))
	if err := rw.raw(hdr[:1+n]); err != nil {
		return err
	}
	return rw.raw(rw.buf)
}

func (s *snapshot) write(w io.Writer) error {
	rw := &recWriter{w: w, crc: crc32.New(castagnoli), mo: proto.MarshalOptions{Deterministic: true}}
	var ver [4]byte
	binary.LittleEndian.PutUint32(ver[:], snapFormat)
	if err := rw.raw(append([]byte(snapMagic), ver[:]...)); err != nil {
		return err
	}
	if err := rw.record(recHeader, s.header); err != nil {
		return err
	}
	if err := rw.record(recCounters, s.counters); err != nil {
		return err
	}
	for _, b := range s.boards {
		if err := rw.record(recBoard, b.st); err != nil {
			return err
		}
		if err := b.body.write(rw); err != nil {
			return err
		}
	}
	for _, p := range s.producers {
		if err := rw.record(recProducer, p); err != nil {
			return err
		}
	}
	for _, t := range s.tombstones {
		if err := rw.record(recTombstone, t); err != nil {
			return err
		}
	}
	rw.crc.Write([]byte{recTrailer})
	sum := rw.crc.Sum32()
	var tr [5]byte
	tr[0] = recTrailer
	binary.LittleEndian.PutUint32(tr[1:], sum)
	_, err := w.Write(tr[:])
	return err
}

var crc64Table = crc64.MakeTable(crc64.ECMA)

// digest hashes the canonical snapshot stream of the current state as of index.
func (st *state) digest(index uint64) (uint64, error) {
	s := st.capture()
	s.header.AppliedIndex = index
	h := crc64.New(crc64Table)
	if err := s.write(h); err != nil {
		return 0, fmt.Errorf("checksum at index %d: %w", index, err)
	}
	return h.Sum64(), nil
}

// ---- reading ----

type recReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	buf []byte
}

func (rr *recReader) readFull(p []byte) error {
	if _, err := io.ReadFull(rr.r, p); err != nil {
		return err
	}
	rr.crc.Write(p)
	return nil
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: snapshot: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// restorer rebuilds state record by record, checking every invariant the
// live state keeps, so a corrupt stream is an error, never a wrong state.
type restorer struct {
	f        *FSM
	st       *state
	lb       *leaderboard // the board being read
	br       boardRestore // its mode's reader
	lastName string
	lastProd string
	lastTomb string
	stage    int
}

func (f *FSM) readSnapshot(r io.Reader) (*state, error) {
	rr := &recReader{r: bufio.NewReaderSize(r, 1<<20), crc: crc32.New(castagnoli)}
	head := make([]byte, len(snapMagic)+4)
	if err := rr.readFull(head); err != nil {
		return nil, corrupt("read magic: %v", err)
	}
	if string(head[:len(snapMagic)]) != snapMagic {
		return nil, corrupt("bad magic")
	}
	if v := binary.LittleEndian.Uint32(head[len(snapMagic):]); v != snapFormat {
		return nil, corrupt("format version %d, this build reads %d", v, snapFormat)
	}
	rs := &restorer{f: f, st: f.newState()}
	for {
		t, err := rr.r.ReadByte()
		if err != nil {
			return nil, corrupt("read record type: %v", err)
		}
		rr.crc.Write([]byte{t})
		if t == recTrailer {
			var sum [4]byte
			if _, err := io.ReadFull(rr.r, sum[:]); err != nil {
				return nil, corrupt("read trailer: %v", err)
			}
			if got, want := rr.crc.Sum32(), binary.LittleEndian.Uint32(sum[:]); got != want {
				return nil, corrupt("crc32c %08x, trailer says %08x", got, want)
			}
			if _, err := rr.r.ReadByte(); err != io.EOF {
				return nil, corrupt("data after the trailer")
			}
			if err := rs.finishBoard(); err != nil {
				return nil, err
			}
			if rs.stage < recCounters {
				return nil, corrupt("missing header")
			}
			return rs.st, nil
		}
		n, err := binary.ReadUvarint(byteCRC{rr})
		if err != nil {
			return nil, corrupt("read record length: %v", err)
		}
		if n > maxRecord {
			return nil, corrupt("record of %d bytes", n)
		}
		if cap(rr.buf) < int(n) {
			rr.buf = make([]byte, n)
		}
		rr.buf = rr.buf[:n]
		if err := rr.readFull(rr.buf); err != nil {
			return nil, corrupt("read record: %v", err)
		}
		if err := rs.record(t, rr.buf); err != nil {
			return nil, err
		}
	}
}

type byteCRC struct{ rr *recReader }

func (b byteCRC) ReadByte() (byte, error) {
	c, err := b.rr.r.ReadByte()
	if err == nil {
		b.rr.crc.Write([]byte{c})
	}
	return c, err
}

func (rs *restorer) order(t int) error {
	if t < rs.stage {
		return corrupt("record type %d after type %d", t, rs.stage)
	}
	rs.stage = t
	return nil
}

func (rs *restorer) record(t byte, data []byte) error {
	var m proto.Message
	switch t {
	case recHeader:
		m = &pb.SnapshotHeader{}
	case recCounters:
		m = &pb.SnapshotCounters{}
	case recBoard:
		m = &pb.LeaderboardState{}
	case recItems:
		m = &pb.ItemChunk{}
	case recBucket:
		m = &pb.BucketChunk{}
	case recProducer:
		m = &pb.ProducerState{}
	case recTombstone:
		m = &pb.Tombstone{}
	case recApproxWindow:
		m = &pb.ApproxWindow{}
	case recApproxBucket:
		m = &pb.ApproxBucket{}
	default:
		return corrupt("unknown record type %d", t)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return corrupt("decode record %d: %v", t, err)
	}
	switch m := m.(type) {
	case *pb.SnapshotHeader:
		if rs.stage != 0 {
			return corrupt("second header")
		}
		rs.stage = recHeader
		if m.FormatVersion != snapFormat {
			return corrupt("header format %d", m.FormatVersion)
		}
		rs.st.appliedIndex, rs.st.logMs = m.AppliedIndex, m.LogTimeMs
	case *pb.SnapshotCounters:
		if rs.stage != recHeader {
			return corrupt("counters out of order")
		}
		rs.stage = recCounters
		proto.Merge(&rs.st.counters, m)
	case *pb.LeaderboardState:
		if rs.stage < recCounters || rs.stage > recBucket {
			return corrupt("leaderboard out of order")
		}
		rs.stage = recBoard
		return rs.startBoard(m)
	case *pb.ItemChunk, *pb.BucketChunk, *pb.ApproxWindow, *pb.ApproxBucket:
		if rs.lb == nil || rs.stage != recBoard {
			return corrupt("record type %d outside a leaderboard", t)
		}
		return rs.br.record(m)
	case *pb.ProducerState:
		if err := rs.finishBoard(); err != nil {
			return err
		}
		if err := rs.order(recProducer); err != nil {
			return err
		}
		if m.ProducerId == "" || m.ProducerId <= rs.lastProd {
			return corrupt("producer %q out of order", m.ProducerId)
		}
		rs.lastProd = m.ProducerId
		return rs.addProducer(m)
	case *pb.Tombstone:
		if err := rs.finishBoard(); err != nil {
			return err
		}
		if err := rs.order(recTombstone); err != nil {
			return err
		}
		if m.Name <= rs.lastTomb {
			return corrupt("tombstone %q out of order", m.Name)
		}
		rs.lastTomb = m.Name
		rs.st.tombstones[m.Name] = m.Incarnation
	}
	return nil
}

func (rs *restorer) startBoard(m *pb.LeaderboardState) error {
	if err := rs.finishBoard(); err != nil {
		return err
	}
	if m.Config == nil {
		return corrupt("leaderboard without config")
	}
	cfg := m.Config
	if err := NormalizeConfig(cfg); err != nil {
		return corrupt("leaderboard config: %v", err)
	}
	if cfg.Name <= rs.lastName {
		return corrupt("leaderboard %q out of order", cfg.Name)
	}
	rs.lastName = cfg.Name
	if m.IdSlots > 1<<32-1 {
		return corrupt("leaderboard %q: %d id slots", cfg.Name, m.IdSlots)
	}
	lb := newLeaderboard(cfg, rs.st.tune)
	if len(m.LateDropped) != len(lb.late) {
		return corrupt("leaderboard %q: %d late counters for %d windows", cfg.Name, len(m.LateDropped), len(lb.late))
	}
	copy(lb.late, m.LateDropped)
	lb.maxEventMs, lb.clockMs = m.MaxEventTimeMs, m.ClockMs
	lb.accepted, lb.rejectedOF = m.AcceptedEvents, m.RejectedOverflow
	br, err := lb.counts.restore(lb, m)
	if err != nil {
		return err
	}
	rs.lb, rs.br = lb, br
	return nil
}

func (rs *restorer) finishBoard() error {
	if rs.lb == nil {
		return nil
	}
	if err := rs.br.finish(); err != nil {
		return err
	}
	rs.st.setBoard(rs.lb.cfg.Name, rs.lb)
	rs.lb, rs.br = nil, nil
	return nil
}

func (rs *restorer) addProducer(m *pb.ProducerState) error {
	p := &producer{id: m.ProducerId, epoch: m.Epoch, high: m.High, lastSeen: m.LastSeenMs}
	switch len(m.SeenBits) {
	case 0:
		if len(m.Outcomes) != 0 {
			return corrupt("producer %q: outcomes without sequences", m.ProducerId)
		}
	case len(p.seen):
		p.any = true
		copy(p.seen[:], m.SeenBits)
	default:
		return corrupt("producer %q: %d seen words", m.ProducerId, len(m.SeenBits))
	}
	for _, o := range m.Outcomes {
		if o.Sequence > p.high || p.high-o.Sequence >= dedupeWindow {
			return corrupt("producer %q: outcome for sequence %d outside window", m.ProducerId, o.Sequence)
		}
		p.setOutcome(o)
	}
	rs.st.dedupe.producers[p.id] = p
	return nil
}
