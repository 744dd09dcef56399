// Package wire holds the protobuf wire-format pieces that topkd's
// hand-written decoders share: the state machine's ingest entries (fsm) and
// the API's column-wise ingest requests (rpc). Both decode strings that alias
// the message instead of copying every item.
package wire

import (
	"slices"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// String returns v as a string that aliases it, if v is valid UTF-8 (proto3
// requires it of string fields). The caller keeps v alive and unchanged for
// as long as the string is in use, and copies whatever it keeps.
func String(v []byte) (string, bool) {
	if len(v) == 0 {
		return "", true
	}
	for _, c := range v {
		if c >= utf8.RuneSelf {
			if !utf8.Valid(v) {
				return "", false
			}
			break
		}
	}
	return unsafe.String(&v[0], len(v)), true
}

// Varints appends the packed varint run v to dst, converting each value as
// proto.Unmarshal does: zigzag marks sint64, and uint32 truncates. The run
// holds one value per byte below 0x80, so dst grows once.
func Varints[T int64 | uint32](dst []T, v []byte, zigzag bool) ([]T, error) {
	cnt := 0
	for _, c := range v {
		if c < 0x80 {
			cnt++
		}
	}
	dst = slices.Grow(dst, cnt)
	for len(v) > 0 {
		x, m := uint64(v[0]), 1
		if x >= 0x80 {
			if x, m = protowire.ConsumeVarint(v); m < 0 {
				return dst, protowire.ParseError(m)
			}
		}
		if zigzag {
			x = uint64(protowire.DecodeZigZag(x))
		}
		dst = append(dst, T(x))
		v = v[m:]
	}
	return dst, nil
}

// CountLeading counts the fields at the start of b that have the one-byte
// tag and a length below 128: the leading run of a repeated field of short
// strings, which is how protobuf writes one, to size its column once.
func CountLeading(b []byte, tag byte) int {
	n := 0
	for len(b) > 1 && b[0] == tag && b[1] < 0x80 && len(b) >= 2+int(b[1]) {
		n++
		b = b[2+int(b[1]):]
	}
	return n
}
