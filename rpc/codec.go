package rpc

import (
	"bytes"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	topkv1 "github.com/topkd/topkd/proto/topk/v1"
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
	if !columnarShape(data) {
		return false // before the copy: row-wise requests would pay for it twice
	}
	r.Reset()
	b := bytes.Clone(data)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		ok := true
		switch {
		case num == 1 && typ == protowire.BytesType:
			r.Leaderboard, n, ok = aliasField(b)
		case num == 3 && typ == protowire.BytesType:
			r.ProducerId, n, ok = aliasField(b)
		case num == 4 && typ == protowire.VarintType:
			r.Epoch, n = protowire.ConsumeVarint(b)
		case num == 5 && typ == protowire.VarintType:
			r.Sequence, n = protowire.ConsumeVarint(b)
		case num == 6 && typ == protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if r.Columns == nil {
					r.Columns = &topkv1.EventColumns{}
				}
				ok = decodeColumns(v, r.Columns)
			}
		default:
			return false // events, unknown fields, other wire types
		}
		if !ok || n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

func decodeColumns(b []byte, c *topkv1.EventColumns) bool {
	if c.Items == nil {
		n := 0
		for v := b; len(v) > 1 && v[0] == 1<<3|byte(protowire.BytesType) && v[1] < 0x80 && len(v) >= 2+int(v[1]); v = v[2+int(v[1]):] {
			n++
		}
		c.Items = make([]string, 0, n)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		ok := true
		switch {
		case num == 1 && typ == protowire.BytesType:
			var s string
			if s, n, ok = aliasField(b); ok {
				c.Items = append(c.Items, s)
			}
		case num == 2 && typ == protowire.BytesType:
			c.Counts, n, ok = packed(c.Counts, b, protowire.DecodeZigZag)
		case num == 3 && typ == protowire.BytesType:
			c.TimeUnixMs, n, ok = packed(c.TimeUnixMs, b, func(u uint64) int64 { return int64(u) })
		default:
			return false
		}
		if !ok || n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// aliasField consumes a length-delimited string field.
func aliasField(b []byte) (string, int, bool) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 || !utf8.Valid(v) {
		return "", n, false
	}
	if len(v) == 0 {
		return "", n, true
	}
	return unsafe.String(&v[0], len(v)), n, true
}

// packed consumes a packed run of varints.
func packed(dst []int64, b []byte, conv func(uint64) int64) ([]int64, int, bool) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return dst, n, false
	}
	if dst == nil {
		cnt := 0
		for _, c := range v {
			if c < 0x80 {
				cnt++
			}
		}
		dst = make([]int64, 0, cnt)
	}
	for len(v) > 0 {
		x, m := protowire.ConsumeVarint(v)
		if m < 0 {
			return dst, n, false
		}
		dst = append(dst, conv(x))
		v = v[m:]
	}
	return dst, n, true
}

// columnarShape reports whether data's top-level fields are all ones the
// fast path decodes.
func columnarShape(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 3 || num == 6) && typ == protowire.BytesType:
		case (num == 4 || num == 5) && typ == protowire.VarintType:
		default:
			return false
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}
