package rpc

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
	"github.com/topkd/topkd/proto/wire"
)

// protoCodec is connect's binary protobuf codec with one fast path: an
// IngestRequest carried column-wise (what the Go client sends) decodes with
// its strings aliasing one copy of the message, instead of one allocation
// per item. Any other shape, or anything unexpected in it, goes through
// proto.Unmarshal, so answers and errors stay protobuf's own.
type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }

func (protoCodec) IsBinary() bool { return true }

func (protoCodec) Marshal(m any) ([]byte, error) {
	pm, err := asProto(m)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(pm)
}

func (protoCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, err := asProto(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (protoCodec) MarshalStable(m any) ([]byte, error) {
	pm, err := asProto(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(pm)
}

func (protoCodec) Unmarshal(data []byte, m any) error {
	if r, ok := m.(*topkv1.IngestRequest); ok && decodeColumnar(data, r) {
		return nil
	}
	pm, err := asProto(m)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

func asProto(m any) (proto.Message, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return pm, nil
}

// decodeColumnar fills r from data when data holds only leaderboard,
// producer_id, epoch, sequence and columns, all well formed; otherwise it
// reports false and r must be decoded the usual way. The caller's buffer
// is pooled by connect, so strings alias a copy of it.
func decodeColumnar(data []byte, r *topkv1.IngestRequest) bool {
	// Before the copy: row-wise requests would pay for it twice.
	shape := fields(data, func(num protowire.Number, typ protowire.Type, b []byte) (int, bool) {
		ok := (num == 1 || num == 3 || num == 6) && typ == protowire.BytesType ||
			(num == 4 || num == 5) && typ == protowire.VarintType
		return protowire.ConsumeFieldValue(num, typ, b), ok
	})
	if !shape {
		return false
	}
	r.Reset()
	return fields(bytes.Clone(data), func(num protowire.Number, typ protowire.Type, b []byte) (int, bool) {
		switch num {
		case 1:
			return stringField(b, &r.Leaderboard)
		case 3:
			return stringField(b, &r.ProducerId)
		case 4:
			n := 0
			r.Epoch, n = protowire.ConsumeVarint(b)
			return n, true
		case 5:
			n := 0
			r.Sequence, n = protowire.ConsumeVarint(b)
			return n, true
		}
		v, n := protowire.ConsumeBytes(b) // 6: columns
		if r.Columns == nil {
			r.Columns = &topkv1.EventColumns{}
		}
		return n, n >= 0 && decodeColumns(v, r.Columns)
	})
}

func decodeColumns(b []byte, c *topkv1.EventColumns) bool {
	if c.Items == nil {
		c.Items = make([]string, 0, wire.CountLeading(b, 1<<3|byte(protowire.BytesType)))
	}
	return fields(b, func(num protowire.Number, typ protowire.Type, b []byte) (int, bool) {
		switch {
		case num == 1 && typ == protowire.BytesType:
			var s string
			n, ok := stringField(b, &s)
			c.Items = append(c.Items, s)
			return n, ok
		case num == 2 && typ == protowire.BytesType:
			return packed(&c.Counts, b, true)
		case num == 3 && typ == protowire.BytesType:
			return packed(&c.TimeUnixMs, b, false)
		}
		return 0, false
	})
}

// fields calls fn with each field's number, wire type and the bytes after
// its tag; fn returns how many of them the field took, and false to give up.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, b []byte) (int, bool)) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		n, ok := fn(num, typ, b)
		if !ok || n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// stringField consumes a length-delimited string field into dst.
func stringField(b []byte, dst *string) (int, bool) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return n, false
	}
	s, ok := wire.String(v)
	*dst = s
	return n, ok
}

// packed consumes a packed run of varints into dst.
func packed(dst *[]int64, b []byte, zigzag bool) (int, bool) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return n, false
	}
	var err error
	*dst, err = wire.Varints(*dst, v, zigzag)
	return n, err == nil
}
