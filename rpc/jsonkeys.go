package rpc

import (
	"bytes"
	"encoding/json"
)

// duplicateKey returns a key that appears twice in one object of the JSON
// text data, if any. encoding/json keeps the last of them silently; the
// JSON API refuses such a body instead, as protojson does for Connect.
// It expects valid JSON (the decoder reports syntax errors) and scans it
// once without allocating for objects of up to 8 keys.
func duplicateKey(data []byte) (string, bool) {
	type frame struct {
		object, expectKey bool
		keys              [][]byte
		inline            [8][]byte
	}
	var stack []frame
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{':
			stack = append(stack, frame{object: true, expectKey: true})
			top := &stack[len(stack)-1]
			top.keys = top.inline[:0]
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ',':
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].expectKey = true
			}
		case '"':
			start := i + 1
			escaped := false
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					escaped = true
					i++
				}
			}
			if len(stack) == 0 || !stack[len(stack)-1].object || !stack[len(stack)-1].expectKey || i > len(data) {
				continue
			}
			top := &stack[len(stack)-1]
			top.expectKey = false
			key := data[start:min(i, len(data))]
			if escaped {
				var s string
				if json.Unmarshal(data[start-1:min(i+1, len(data))], &s) == nil {
					key = []byte(s)
				}
			}
			for _, k := range top.keys {
				if bytes.Equal(k, key) {
					return string(key), true
				}
			}
			top.keys = append(top.keys, key)
		}
	}
	return "", false
}
