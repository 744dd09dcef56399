package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/topkd/topkd/client"
)

// mapping turns input records into events.
type mapping struct {
	format     string // auto, csv or ndjson
	itemCol    string // a column name, or several joined with '+'
	itemSep    string
	timeCol    string
	countCol   string
	timeFormat string // rfc3339, unix-ms, unix-s or a Go layout
}

func (m *mapping) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&m.format, "format", "auto", "input format: csv, ndjson, or auto (by file extension, else by content)")
	f.StringVar(&m.itemCol, "item-col", "item", "column (CSV header or JSON key) holding the item; join several with '+', e.g. origin+destination")
	f.StringVar(&m.itemSep, "item-sep", "-", "separator between the values of joined item columns")
	f.StringVar(&m.timeCol, "time-col", "", "column holding the event time (default: none, the server stamps arrival time)")
	f.StringVar(&m.countCol, "count-col", "", "column holding the event's weight (default: none, each record counts 1)")
	f.StringVar(&m.timeFormat, "time-format", "rfc3339", `time format: rfc3339, unix-ms, unix-s, or a Go layout such as "2006-01-02 15:04:05" (UTC)`)
}

func (m *mapping) itemCols() []string { return strings.Split(m.itemCol, "+") }

// parseTime parses one time value by the mapping's format.
func (m *mapping) parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch m.timeFormat {
	case "", "rfc3339":
		return time.Parse(time.RFC3339, s)
	case "unix-ms":
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(s, 64)
			if ferr != nil {
				return time.Time{}, fmt.Errorf("%q is not unix milliseconds", s)
			}
			v = int64(f)
		}
		return time.UnixMilli(v), nil
	case "unix-s":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not unix seconds", s)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	default:
		return time.ParseInLocation(m.timeFormat, s, time.UTC)
	}
}

func parseCount(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return int64(f), nil
}

// eventSource yields events one by one; Next returns io.EOF at the end.
type eventSource interface {
	Next() (client.Event, error)
}

// input is an opened file or stdin, decompressed when gzip, with a count of
// the raw bytes read for progress.
type input struct {
	r     io.Reader
	size  int64 // raw size, -1 when unknown
	read  *atomic.Int64
	close func() error
	name  string
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

var gzipMagic = []byte{0x1f, 0x8b}

// openInput opens path ("" or "-" for stdin), detecting gzip by the .gz
// extension or by its magic bytes.
func openInput(path string, stdin io.Reader) (*input, error) {
	in := &input{size: -1, read: new(atomic.Int64), close: func() error { return nil }, name: "stdin"}
	raw := stdin
	if path != "" && path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			in.size = st.Size()
		}
		raw, in.close, in.name = f, f.Close, path
	}
	br := bufio.NewReaderSize(countingReader{raw, in.read}, 1<<16)
	magic, _ := br.Peek(2)
	if bytes.Equal(magic, gzipMagic) || strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(br)
		if err != nil {
			in.close()
			return nil, fmt.Errorf("%s: gzip: %w", in.name, err)
		}
		in.r = bufio.NewReaderSize(zr, 1<<16)
	} else {
		in.r = br
	}
	return in, nil
}

// detectFormat picks csv or ndjson from the extension, else the first byte.
func detectFormat(format, path string, r *bufio.Reader) (string, error) {
	switch format {
	case "csv", "ndjson":
		return format, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("--format %q is not one of csv, ndjson, auto", format)
	}
	name := strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(path), ".gz"), ".gzip")
	switch filepath.Ext(name) {
	case ".csv":
		return "csv", nil
	case ".ndjson", ".jsonl", ".json":
		return "ndjson", nil
	}
	for {
		b, err := r.Peek(1)
		if err != nil {
			return "csv", nil // empty input: either will do
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = r.ReadByte()
			continue
		case '{':
			return "ndjson", nil
		}
		return "csv", nil
	}
}

// newSource reads the input in its format.
func newSource(in *input, path string, m mapping) (eventSource, error) {
	br, ok := in.r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(in.r)
	}
	format, err := detectFormat(m.format, path, br)
	if err != nil {
		return nil, err
	}
	if format == "ndjson" {
		return &ndjsonSource{m: m, sc: newLineScanner(br), cols: m.itemCols()}, nil
	}
	return newCSVSource(br, m)
}

// ---- CSV ----

type csvSource struct {
	m        mapping
	r        *csv.Reader
	itemIdx  []int
	timeIdx  int
	countIdx int
	line     int
	sb       strings.Builder
}

func newCSVSource(r io.Reader, m mapping) (*csvSource, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("csv: empty input (a header row is required)")
		}
		return nil, fmt.Errorf("csv header: %w", err)
	}
	idx := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := idx[h]; !dup {
			idx[h] = i
		}
	}
	col := func(flag, name string) (int, error) {
		i, ok := idx[name]
		if !ok {
			return 0, fmt.Errorf("%s: column %q is not in the header (%s)", flag, name, strings.Join(header, ","))
		}
		return i, nil
	}
	s := &csvSource{m: m, r: cr, timeIdx: -1, countIdx: -1, line: 1}
	for _, c := range m.itemCols() {
		i, err := col("--item-col", c)
		if err != nil {
			return nil, err
		}
		s.itemIdx = append(s.itemIdx, i)
	}
	if m.timeCol != "" {
		if s.timeIdx, err = col("--time-col", m.timeCol); err != nil {
			return nil, err
		}
	}
	if m.countCol != "" {
		if s.countIdx, err = col("--count-col", m.countCol); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *csvSource) Next() (client.Event, error) {
	for {
		rec, err := s.r.Read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return client.Event{}, io.EOF
			}
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return client.Event{}, &recordError{fmt.Errorf("csv: %w", err)}
			}
			return client.Event{}, fmt.Errorf("csv: %w", err)
		}
		s.line, _ = s.r.FieldPos(0)
		e, keep, err := s.event(rec)
		if err != nil {
			return e, &recordError{fmt.Errorf("line %d: %w", s.line, err)}
		}
		if keep {
			return e, nil
		}
	}
}

// event maps one record; keep is false for a zero weight (which would mean
// 1 on the wire), so such records are skipped.
func (s *csvSource) event(rec []string) (e client.Event, keep bool, err error) {
	field := func(i int) (string, error) {
		if i >= len(rec) {
			return "", fmt.Errorf("%d fields, no column %d", len(rec), i+1)
		}
		return rec[i], nil
	}
	if len(s.itemIdx) == 1 {
		v, err := field(s.itemIdx[0])
		if err != nil {
			return e, false, err
		}
		e.Item = strings.Clone(v)
	} else {
		s.sb.Reset()
		for j, i := range s.itemIdx {
			v, err := field(i)
			if err != nil {
				return e, false, err
			}
			if j > 0 {
				s.sb.WriteString(s.m.itemSep)
			}
			s.sb.WriteString(v)
		}
		e.Item = s.sb.String()
	}
	if e.Item == "" {
		return e, false, errors.New("empty item")
	}
	if s.timeIdx >= 0 {
		v, err := field(s.timeIdx)
		if err != nil {
			return e, false, err
		}
		if e.Time, err = s.m.parseTime(v); err != nil {
			return e, false, fmt.Errorf("--time-col %s: %w", s.m.timeCol, err)
		}
	}
	if s.countIdx >= 0 {
		v, err := field(s.countIdx)
		if err != nil {
			return e, false, err
		}
		if e.Count, err = parseCount(v); err != nil {
			return e, false, fmt.Errorf("--count-col %s: %w", s.m.countCol, err)
		}
	}
	return e, s.countIdx < 0 || e.Count != 0, nil
}

// recordError is a problem with one input record (as opposed to reading the
// input): ingest --skip-invalid skips such records.
type recordError struct{ err error }

func (e *recordError) Error() string { return e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

// ---- NDJSON ----

func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return sc
}

type ndjsonSource struct {
	m    mapping
	sc   *bufio.Scanner
	cols []string
	line int
	obj  map[string]json.RawMessage
	sb   strings.Builder
}

// scalar renders a JSON string or number as text.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false
		}
		return s, true
	case '{', '[', 'n':
		return "", false
	}
	return string(raw), true // number or boolean
}

func (s *ndjsonSource) Next() (client.Event, error) {
	for s.sc.Scan() {
		s.line++
		b := bytes.TrimSpace(s.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		clear(s.obj)
		if err := json.Unmarshal(b, &s.obj); err != nil {
			return client.Event{}, &recordError{fmt.Errorf("line %d: %w", s.line, err)}
		}
		get := func(flag, key string) (string, error) {
			v, ok := s.obj[key]
			if !ok {
				return "", &recordError{fmt.Errorf("line %d: %s: no key %q", s.line, flag, key)}
			}
			str, ok := scalar(v)
			if !ok {
				return "", &recordError{fmt.Errorf("line %d: %s: %q is not a string or number", s.line, flag, key)}
			}
			return str, nil
		}
		var e client.Event
		s.sb.Reset()
		for j, c := range s.cols {
			v, err := get("--item-col", c)
			if err != nil {
				return e, err
			}
			if j > 0 {
				s.sb.WriteString(s.m.itemSep)
			}
			s.sb.WriteString(v)
		}
		e.Item = s.sb.String()
		if e.Item == "" {
			return e, &recordError{fmt.Errorf("line %d: empty item", s.line)}
		}
		if s.m.timeCol != "" {
			v, err := get("--time-col", s.m.timeCol)
			if err != nil {
				return e, err
			}
			if e.Time, err = s.m.parseTime(v); err != nil {
				return e, &recordError{fmt.Errorf("line %d: --time-col %s: %w", s.line, s.m.timeCol, err)}
			}
		}
		if s.m.countCol != "" {
			v, err := get("--count-col", s.m.countCol)
			if err != nil {
				return e, err
			}
			if e.Count, err = parseCount(v); err != nil {
				return e, &recordError{fmt.Errorf("line %d: --count-col %s: %w", s.line, s.m.countCol, err)}
			}
			if e.Count == 0 {
				continue
			}
		}
		return e, nil
	}
	if err := s.sc.Err(); err != nil {
		return client.Event{}, fmt.Errorf("line %d: %w", s.line+1, err)
	}
	return client.Event{}, io.EOF
}
