package fsm

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/topkd/topkd/proto/topkd/raftcmd/v1"
	"github.com/topkd/topkd/proto/wire"
)

// decodeIngest decodes an IngestEntry payload like proto.Unmarshal does, with
// one difference: strings alias payload instead of being copied. Copying each
// item was a quarter of decoding and one allocation per delta. The entry
// lives only while its log is applied; whatever keeps a string beyond that
// (interned items, producer ids, approximate summaries) clones it.
// Unknown fields, and known fields with another wire type, are skipped as
// proto.Unmarshal skips them; FuzzDecodeIngest holds the two to the same answers.
func decodeIngest(b []byte) (*pb.IngestEntry, error) {
	e := &pb.IngestEntry{}
	nparts := 0
	if err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if num == 2 && typ == protowire.BytesType {
			nparts++
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if nparts > 0 {
		e.Parts = make([]*pb.ProducerPart, 0, nparts)
	}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			e.LeaderTimeMs = int64(x)
		case num == 2 && typ == protowire.BytesType:
			p, err := decodePart(v)
			if err != nil {
				return err
			}
			e.Parts = append(e.Parts, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func decodePart(b []byte) (*pb.ProducerPart, error) {
	p := &pb.ProducerPart{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			p.ProducerId, err = aliasString(v, "producer_id")
		case num == 2 && typ == protowire.VarintType:
			p.Epoch = x
		case num == 3 && typ == protowire.VarintType:
			p.Sequence = x
		case num == 4 && typ == protowire.BytesType:
			var d *pb.LeaderboardDeltas
			if d, err = decodeDeltas(v); err == nil {
				p.Boards = append(p.Boards, d)
			}
		}
		return err
	})
	return p, err
}

// decodeDeltas is the hot loop: one-byte tags of the item, delta, time and
// event columns take a fast path; anything else goes through skipField.
func decodeDeltas(b []byte) (*pb.LeaderboardDeltas, error) {
	d := &pb.LeaderboardDeltas{}
	for len(b) > 0 {
		if b[0] == itemsTag && len(b) > 1 && b[1] < 0x80 && len(b) >= 2+int(b[1]) {
			// Size the column at the start of its run, which follows the
			// leaderboard and incarnation fields: one allocation, no growth.
			if d.Items == nil {
				d.Items = make([]string, 0, wire.CountLeading(b, itemsTag))
			}
			v := b[2 : 2+int(b[1])]
			s, err := aliasString(v, "items")
			if err != nil {
				return nil, err
			}
			d.Items = append(d.Items, s)
			b = b[2+len(v):]
			continue
		}
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, wireErr(n)
		}
		if num > protowire.MaxValidNumber {
			return nil, fmt.Errorf("%w: field number %d", errWire, num)
		}
		b = b[n:]
		var err error
		switch {
		case num == 1 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				d.Leaderboard, err = aliasString(v, "leaderboard")
			}
		case num == 2 && typ == protowire.VarintType:
			d.Incarnation, n = protowire.ConsumeVarint(b)
		case num == 3 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				var s string
				if s, err = aliasString(v, "items"); err == nil {
					d.Items = append(d.Items, s)
				}
			}
		case num == 4 && (typ == protowire.VarintType || typ == protowire.BytesType):
			d.Deltas, n, err = column(d.Deltas, typ, b, true)
		case num == 5 && (typ == protowire.VarintType || typ == protowire.BytesType):
			d.EventTimesS, n, err = column(d.EventTimesS, typ, b, false)
		case num == 6 && (typ == protowire.VarintType || typ == protowire.BytesType):
			d.Events, n, err = column(d.Events, typ, b, false)
		case num == 8 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			d.MaxEventTimeMs = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, wireErr(n)
		}
		b = b[n:]
	}
	return d, nil
}

// itemsTag is LeaderboardDeltas.items' tag byte (field 3, length-delimited).
const itemsTag = 3<<3 | byte(protowire.BytesType)

// column decodes one occurrence of a repeated varint field, packed or not,
// from b (just past the tag) and returns the bytes it consumed. zigzag
// marks sint64.
func column[T int64 | uint32](dst []T, typ protowire.Type, b []byte, zigzag bool) ([]T, int, error) {
	if typ == protowire.VarintType {
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, n, nil
		}
		if zigzag {
			x = uint64(protowire.DecodeZigZag(x))
		}
		return append(dst, T(x)), n, nil
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return dst, n, nil
	}
	dst, err := wire.Varints(dst, v, zigzag)
	if err != nil {
		return dst, 0, fmt.Errorf("%w: %v", errWire, err)
	}
	return dst, n, nil
}

// walk calls fn for each field of a message: v is a length-delimited field's
// bytes, x a varint field's value; other wire types are checked and skipped.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireErr(n)
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d", errWire, num)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return wireErr(n)
		}
		b = b[n:]
		if typ == protowire.VarintType || typ == protowire.BytesType {
			if err := fn(num, typ, v, x); err != nil {
				return err
			}
		}
	}
	return nil
}

func aliasString(v []byte, field string) (string, error) {
	str, ok := wire.String(v)
	if !ok {
		return "", fmt.Errorf("field %s: invalid UTF-8", field)
	}
	return str, nil
}

var errWire = errors.New("malformed protobuf")

func wireErr(n int) error {
	return fmt.Errorf("%w: %v", errWire, protowire.ParseError(n))
}
