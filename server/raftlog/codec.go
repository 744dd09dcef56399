package raftlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// An entry's value (its index is the key):
//
//	crc32c (4 bytes, little-endian) of everything after it
//	version byte (1), type byte
//	uvarint term, varint AppendedAt in Unix nanoseconds (0: zero time)
//	uvarint len, data; uvarint len, extensions
//
// bbolt checksums only its meta pages, so the entry carries its own
// checksum: a damaged page is an error naming the group and index, never
// an entry applied with wrong bytes.
const entryVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errCorrupt = errors.New("entry damaged")

func encodedSize(l *raft.Log) int {
	return 4 + 2 + 3*binary.MaxVarintLen64 + len(l.Data) + binary.MaxVarintLen64 + len(l.Extensions)
}

func appendLog(buf []byte, l *raft.Log) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, entryVersion, byte(l.Type))
	buf = binary.AppendUvarint(buf, l.Term)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.AppendVarint(buf, at)
	buf = binary.AppendUvarint(buf, uint64(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = binary.AppendUvarint(buf, uint64(len(l.Extensions)))
	buf = append(buf, l.Extensions...)
	binary.LittleEndian.PutUint32(buf[start:], crc32.Checksum(buf[start+4:], castagnoli))
	return buf
}

// decodeLog fills l from v, copying: v is only valid inside its transaction.
func decodeLog(v []byte, l *raft.Log) error {
	if len(v) < 6 || binary.LittleEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return errCorrupt
	}
	if v[4] != entryVersion {
		return errors.New("unknown entry version")
	}
	typ := raft.LogType(v[5])
	rest := v[6:]
	term, n := binary.Uvarint(rest)
	if n <= 0 {
		return errCorrupt
	}
	rest = rest[n:]
	at, n := binary.Varint(rest)
	if n <= 0 {
		return errCorrupt
	}
	rest = rest[n:]
	data, rest, ok := cutBytes(rest)
	if !ok {
		return errCorrupt
	}
	ext, rest, ok := cutBytes(rest)
	if !ok || len(rest) != 0 {
		return errCorrupt
	}
	// One allocation for both byte fields.
	buf := make([]byte, len(data)+len(ext))
	copy(buf, data)
	copy(buf[len(data):], ext)
	*l = raft.Log{Term: term, Type: typ}
	if len(data) > 0 {
		l.Data = buf[:len(data):len(data)]
	}
	if len(ext) > 0 {
		l.Extensions = buf[len(data):]
	}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	return nil
}

func cutBytes(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}
