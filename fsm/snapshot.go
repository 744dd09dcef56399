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
	"unsafe"

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
	st     *pb.LeaderboardState
	items  frozen[string]
	counts frozen[int64]
	// The all-time deltas not yet folded into counts (journal.go).
	allIDs    []uint32
	allDeltas []int64
	buckets   [][]snapBucket
	approx    []snapApprox
}

type snapBucket struct {
	index  int64
	ids    frozen[uint32]
	deltas frozen[int64]
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
		b := snapBoard{
			st: &pb.LeaderboardState{Config: cloneConfig(lb.cfg), MaxEventTimeMs: lb.maxEventMs, IdSlots: uint64(lb.items.len()),
				FreeIds: slices.Clone(lb.free), RejectedMaxItems: lb.rejectedMI, RejectedOverflow: lb.rejectedOF, AcceptedEvents: lb.accepted,
				LateDropped: slices.Clone(lb.late), ClockMs: lb.clockMs},
			items:  lb.items.freeze(),
			counts: lb.allCounts.freeze(),
		}
		b.allIDs, b.allDeltas = lb.allLog.seal()
		if lb.ap != nil {
			b.st.RejectedNegative = lb.ap.rejectedNeg
			b.approx = lb.ap.capture()
			s.boards = append(s.boards, b)
			continue
		}
		for _, w := range lb.wins {
			var bs []snapBucket
			for _, bk := range w.buckets {
				bs = append(bs, snapBucket{index: bk.index, ids: bk.ids.freeze(), deltas: bk.deltas.freeze()})
			}
			b.buckets = append(b.buckets, bs)
		}
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
		if err := writeApprox(rw, b.approx); err != nil {
			return err
		}
		starts, ids, deltas := byChunk(b.allIDs, b.allDeltas, (b.items.len()+chunkMask)>>chunkBits, nil, nil, nil)
		for first := 0; first < b.items.len(); first += chunkSize {
			end := min(first+chunkSize, b.items.len())
			ic := &pb.ItemChunk{FirstId: uint32(first), Items: make([]string, 0, end-first), AllCounts: make([]int64, 0, end-first)}
			for i := first; i < end; i++ {
				ic.Items = append(ic.Items, b.items.get(i))
				ic.AllCounts = append(ic.AllCounts, b.counts.get(i))
			}
			for k := starts[first>>chunkBits]; k < starts[first>>chunkBits+1]; k++ {
				ic.AllCounts[ids[k]-uint32(first)] += deltas[k]
			}
			if err := rw.record(recItems, ic); err != nil {
				return err
			}
		}
		for wi, bs := range b.buckets {
			for _, bk := range bs {
				n := bk.ids.len()
				for first := 0; first == 0 || first < n; first += chunkSize {
					end := min(first+chunkSize, n)
					bc := &pb.BucketChunk{Window: uint32(wi), Index: bk.index, Last: end == n,
						Ids: make([]uint32, 0, end-first), Deltas: make([]int64, 0, end-first)}
					for i := first; i < end; i++ {
						bc.Ids = append(bc.Ids, bk.ids.get(i))
						bc.Deltas = append(bc.Deltas, bk.deltas.get(i))
					}
					if err := rw.record(recBucket, bc); err != nil {
						return err
					}
				}
			}
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
	f         *FSM
	st        *state
	lb        *leaderboard
	lbName    string
	items     int // item slots received for lb
	wantIDs   int
	freeSet   map[uint32]bool
	curWin    int
	curIdx    int64
	curBk     *bucket
	inBucket  bool
	seenIn    []uint32 // per id: the last bucket (bucketSeq) it appeared in, to refuse duplicates
	bucketSeq uint32
	lastName  string
	lastProd  string
	lastTomb  string
	stage     int
	ap        *approxRestore // the current board is approximate
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
	case *pb.ApproxWindow:
		if rs.lb == nil || rs.ap == nil || rs.stage != recBoard {
			return corrupt("approximate window record out of order")
		}
		return rs.ap.window(m)
	case *pb.ApproxBucket:
		if rs.lb == nil || rs.ap == nil || rs.stage != recBoard {
			return corrupt("approximate bucket record out of order")
		}
		return rs.ap.bucket(m)
	case *pb.ItemChunk:
		if rs.lb == nil || rs.ap != nil || (rs.stage != recBoard && rs.stage != recItems) {
			return corrupt("item chunk out of order")
		}
		rs.stage = recItems
		return rs.addItems(m)
	case *pb.BucketChunk:
		if rs.lb == nil || rs.ap != nil || rs.stage < recBoard || rs.stage > recBucket {
			return corrupt("bucket chunk out of order")
		}
		if rs.stage != recBucket {
			if err := rs.finishItems(); err != nil {
				return err
			}
		}
		rs.stage = recBucket
		return rs.addBucket(m)
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
	rs.ap = nil
	if lb.ap != nil {
		if m.IdSlots != 0 || len(m.FreeIds) != 0 || m.RejectedMaxItems != 0 {
			return corrupt("leaderboard %q: item table in an approximate board", cfg.Name)
		}
		lb.ap.rejectedNeg = m.RejectedNegative
		rs.ap = &approxRestore{lb: lb, name: cfg.Name}
	} else if m.RejectedNegative != 0 {
		return corrupt("leaderboard %q: negative rejections in an exact board", cfg.Name)
	}
	if len(m.LateDropped) != len(lb.wins) {
		return corrupt("leaderboard %q: %d late counters for %d windows", cfg.Name, len(m.LateDropped), len(lb.wins))
	}
	copy(lb.late, m.LateDropped)
	lb.maxEventMs, lb.clockMs = m.MaxEventTimeMs, m.ClockMs
	lb.accepted, lb.rejectedMI, lb.rejectedOF = m.AcceptedEvents, m.RejectedMaxItems, m.RejectedOverflow
	rs.freeSet = make(map[uint32]bool, len(m.FreeIds))
	for _, id := range m.FreeIds {
		if uint64(id) >= m.IdSlots || rs.freeSet[id] {
			return corrupt("leaderboard %q: bad free id %d", cfg.Name, id)
		}
		rs.freeSet[id] = true
	}
	lb.free = slices.Clone(m.FreeIds)
	rs.lb, rs.lbName, rs.items, rs.wantIDs = lb, cfg.Name, 0, int(m.IdSlots)
	rs.seenIn, rs.bucketSeq = nil, 0
	rs.curWin, rs.curIdx, rs.curBk, rs.inBucket = 0, 0, nil, false
	return nil
}

func (rs *restorer) addItems(m *pb.ItemChunk) error {
	lb := rs.lb
	if int(m.FirstId) != rs.items || len(m.Items) != len(m.AllCounts) || rs.items+len(m.Items) > rs.wantIDs {
		return corrupt("leaderboard %q: item chunk at %d (have %d of %d)", rs.lbName, m.FirstId, rs.items, rs.wantIDs)
	}
	for i, s := range m.Items {
		id := uint32(rs.items + i)
		c := m.AllCounts[i]
		lb.items.append(s)
		lb.allCounts.append(c)
		lb.recs.grow()
		if rs.freeSet[id] {
			if s != "" || c != 0 {
				return corrupt("leaderboard %q: free id %d holds an item", rs.lbName, id)
			}
			continue
		}
		lb.live++
		lb.itemBytes += int64(len(s))
		lb.all.rawAdd(id, c)
	}
	rs.items += len(m.Items)
	return nil
}

// finishItems checks the item count and builds the index in one presized
// pass, now that the data backing the header's claims has been read.
func (rs *restorer) finishItems() error {
	if rs.items != rs.wantIDs {
		return corrupt("leaderboard %q: %d of %d item slots", rs.lbName, rs.items, rs.wantIDs)
	}
	lb := rs.lb
	lb.index = newItemIndex(&lb.items, lb.live)
	for id := range rs.wantIDs {
		if j := id + recAhead; j < rs.wantIDs {
			lb.index.prefetchSlot(lb.items.get(j))
		}
		if rs.freeSet[uint32(id)] {
			continue
		}
		s := lb.items.get(id)
		if _, dup := lb.index.get(s); dup {
			return corrupt("leaderboard %q: item %q twice", rs.lbName, s)
		}
		lb.index.put(s, uint32(id))
	}
	return nil
}

func (rs *restorer) addBucket(m *pb.BucketChunk) error {
	lb := rs.lb
	if int(m.Window) >= len(lb.wins) || len(m.Ids) != len(m.Deltas) {
		return corrupt("leaderboard %q: bucket chunk for window %d", rs.lbName, m.Window)
	}
	wi := int(m.Window)
	w := lb.wins[wi]
	if rs.seenIn == nil {
		rs.seenIn = make([]uint32, rs.wantIDs)
	}
	if rs.inBucket {
		if wi != rs.curWin || m.Index != rs.curIdx {
			return corrupt("leaderboard %q: bucket %d/%d interrupted", rs.lbName, rs.curWin, rs.curIdx)
		}
	} else {
		if wi < rs.curWin || (wi == rs.curWin && len(w.buckets) > 0 && m.Index <= w.buckets[len(w.buckets)-1].index) {
			return corrupt("leaderboard %q: bucket %d/%d out of order", rs.lbName, wi, m.Index)
		}
		rs.curBk = &bucket{index: m.Index}
		rs.bucketSeq++
		w.buckets = append(w.buckets, rs.curBk)
	}
	rs.curWin, rs.curIdx = wi, m.Index
	b := rs.curBk
	for i, id := range m.Ids {
		// Entries name ids at random: prefetch the record and the seen
		// mark of one a little ahead, as bucket expiry does.
		if j := i + recAhead; j < len(m.Ids) && int(m.Ids[j]) < rs.wantIDs && int(m.Ids[j]) < lb.recs.n {
			lb.recs.prefetch(m.Ids[j])
			prefetch(unsafe.Pointer(&rs.seenIn[m.Ids[j]]))
		}
		if int(id) >= rs.wantIDs || rs.freeSet[id] {
			return corrupt("leaderboard %q: bucket entry for id %d", rs.lbName, id)
		}
		if rs.seenIn[id] == rs.bucketSeq {
			return corrupt("leaderboard %q: id %d twice in bucket %d", rs.lbName, id, m.Index)
		}
		rs.seenIn[id] = rs.bucketSeq
		b.ids.append(id)
		b.deltas.append(m.Deltas[i])
		w.rawAdd(id, m.Deltas[i])
		lb.recs.addRefs(id, 1)
	}
	rs.inBucket = !m.Last
	return nil
}

func (rs *restorer) finishBoard() error {
	lb := rs.lb
	if lb == nil {
		return nil
	}
	if rs.ap != nil {
		if err := rs.ap.finish(); err != nil {
			return err
		}
		rs.st.setBoard(rs.lbName, lb)
		rs.lb, rs.ap = nil, nil
		return nil
	}
	if rs.stage == recBoard || rs.stage == recItems {
		if err := rs.finishItems(); err != nil {
			return err
		}
	}
	if rs.inBucket {
		return corrupt("leaderboard %q: last bucket unfinished", rs.lbName)
	}
	for id := 0; id < rs.wantIDs; id++ {
		if !rs.freeSet[uint32(id)] && lb.recs.refs(uint32(id)) == 0 && lb.all.cnt(uint32(id)) == 0 {
			return corrupt("leaderboard %q: id %d holds nothing but is not free", rs.lbName, id)
		}
	}
	// Counts were written raw; build each window's classes and heap in one pass.
	lb.all.rebuild()
	for _, w := range lb.wins {
		w.rebuild()
		w.adoptNewest()
	}
	rs.st.setBoard(rs.lbName, lb)
	rs.lb = nil
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
