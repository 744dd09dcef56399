package security

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// ParseGossipKey decodes a gossip encryption key: standard base64 of 16,
// 24 or 32 bytes (AES-128, -192 or -256), as memberlist takes it.
func ParseGossipKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key: not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", len(k))
}

// NewGossipKey returns a random 32-byte key in the form ParseGossipKey reads.
func NewGossipKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b[:]), nil
}

// GossipKeyID names a key without revealing it: the first 8 hex digits of
// its SHA-256, as status and logs show it.
func GossipKeyID(key []byte) string { return Digest(string(key))[:8] }
