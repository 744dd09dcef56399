package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's meta page (go.etcd.io/bbolt db.go, format version 2): after a
// 16-byte page header, magic, version, page size, flags, root bucket (16
// bytes), freelist page, high-water page id, txid, then an FNV-64a checksum
// of the 56 bytes before it. Pages 0 and 1 hold the two alternating copies.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	metaOffset     = 16
	metaSummedSize = 56
)

type boltMeta struct {
	pageSize uint32
	pgid     uint64 // pages in use: the file must hold at least pgid*pageSize bytes
	txid     uint64
}

func parseMeta(b []byte) (boltMeta, error) {
	if len(b) < metaOffset+metaSummedSize+8 {
		return boltMeta{}, errors.New("short meta page")
	}
	m := b[metaOffset:]
	if binary.LittleEndian.Uint32(m) != boltMagic {
		return boltMeta{}, errors.New("not a bbolt meta page")
	}
	if v := binary.LittleEndian.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:metaSummedSize])
	if h.Sum64() != binary.LittleEndian.Uint64(m[metaSummedSize:]) {
		return boltMeta{}, errors.New("meta page checksum mismatch")
	}
	return boltMeta{pageSize: binary.LittleEndian.Uint32(m[8:]), pgid: binary.LittleEndian.Uint64(m[40:]),
		txid: binary.LittleEndian.Uint64(m[48:])}, nil
}

// CheckFile refuses a bbolt file that bbolt would crash on rather than
// report: one shorter than its meta pages say (bbolt maps it and faults
// with SIGBUS on the missing pages) or one with no valid meta page (an
// assertion panic). A missing or empty file is fine: bbolt creates it.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	damaged := func(what string) error {
		return fmt.Errorf("%s is damaged (%s): topkd cannot read it; restore the data directory from a backup, or move the file away to start this node without the entries it held", path, what)
	}
	head := make([]byte, 4096)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	m0, err0 := parseMeta(head[:n])
	var m1 boltMeta
	err1 := errors.New("no second meta page")
	// The second meta page sits one page in; the first tells the page size,
	// and if it is damaged, try the sizes bbolt uses.
	sizes := []uint32{4096, 8192, 16384, 65536}
	if err0 == nil {
		sizes = []uint32{m0.pageSize}
	}
	for _, ps := range sizes {
		p := make([]byte, metaOffset+metaSummedSize+8)
		if k, err := f.ReadAt(p, int64(ps)); err == nil || k == len(p) {
			if m, err := parseMeta(p); err == nil && m.pageSize == ps {
				m1, err1 = m, nil
				break
			} else if err0 == nil {
				err1 = err
			}
		}
	}
	var m boltMeta
	switch {
	case err0 != nil && err1 != nil:
		return damaged(fmt.Sprintf("meta pages: %v; %v", err0, err1))
	case err0 != nil:
		m = m1
	case err1 != nil || m0.txid >= m1.txid:
		m = m0
	default:
		m = m1
	}
	if need := int64(m.pgid) * int64(m.pageSize); fi.Size() < need {
		return damaged(fmt.Sprintf("%d bytes, its meta page needs %d: the file was truncated", fi.Size(), need))
	}
	return nil
}
