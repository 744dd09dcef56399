package security

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Role is what a token may do. Roles nest: admin may do what write may,
// and write what read may (a producer discovers leaders through status).
type Role int

const (
	// None is no role: the call needs no token (health checks, metrics).
	None Role = iota
	// Read: queries, status, leaderboard listings.
	Read
	// Write: ingest.
	Write
	// Admin: join, leave, rebalance, verify, leaderboard create and drop,
	// gossip key rotation.
	Admin
)

func (r Role) String() string {
	switch r {
	case Read:
		return "read"
	case Write:
		return "write"
	case Admin:
		return "admin"
	}
	return "none"
}

// ParseRole parses read, write or admin.
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{Read, Write, Admin} {
		if s == r.String() {
			return r, nil
		}
	}
	return None, fmt.Errorf("role %q: want read, write or admin", s)
}

// Errors of Tokens.Check. Neither says anything about the token presented.
var (
	ErrNoToken       = errors.New("a bearer token is required")
	ErrUnknownToken  = errors.New("the bearer token is not known to this node")
	ErrNotPermitted  = errors.New("the token's role does not permit this call")
	errMalformedLine = errors.New("want: ROLE SHA256-HEX [NAME]")
)

// tokenEntry is one line of a token file.
type tokenEntry struct {
	role   Role
	digest [sha256.Size]byte
	name   string
}

// Tokens checks bearer tokens against SHA-256 digests with roles. The file
// holds one token per line: "ROLE SHA256-HEX [NAME]", '#' starts a
// comment. A token is revoked by deleting its line; the file is reloaded
// when it changes.
type Tokens struct {
	path    string
	entries atomic.Pointer[[]tokenEntry]
	stamp   atomic.Value // string
}

// LoadTokens reads a token file.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseTokens reads token lines from a string (TOPKD_TOKENS); such tokens
// are fixed for the process's life.
func ParseTokens(text string) (*Tokens, error) {
	es, err := parseTokens(text, "TOPKD_TOKENS")
	if err != nil {
		return nil, err
	}
	t := &Tokens{}
	t.entries.Store(&es)
	return t, nil
}

func parseTokens(text, source string) ([]tokenEntry, error) {
	var es []tokenEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	for ln := 1; sc.Scan(); ln++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("%s line %d: %w", source, ln, errMalformedLine)
		}
		role, err := ParseRole(f[0])
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", source, ln, err)
		}
		var e tokenEntry
		if b, err := hex.DecodeString(f[1]); err != nil || len(b) != sha256.Size {
			// Never echo the field: it may be a token pasted by mistake.
			return nil, fmt.Errorf("%s line %d: the second field is not a SHA-256 digest in hex (64 characters); %w", source, ln, errMalformedLine)
		} else {
			copy(e.digest[:], b)
		}
		e.role, e.name = role, strings.Join(f[2:], " ")
		es = append(es, e)
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("%s holds no token", source)
	}
	return es, nil
}

// Reload reads the file again; on error the tokens in use stay.
func (t *Tokens) Reload() error {
	if t.path == "" {
		return nil
	}
	stamp := fileStamp(t.path)
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	es, err := parseTokens(string(b), t.path)
	if err != nil {
		return err
	}
	t.entries.Store(&es)
	t.stamp.Store(stamp)
	return nil
}

// Len is how many tokens are known.
func (t *Tokens) Len() int { return len(*t.entries.Load()) }

// Watch reloads the file when it changes, checking every interval.
func (t *Tokens) Watch(ctx context.Context, every time.Duration, log *slog.Logger) {
	if t.path == "" {
		return
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if fileStamp(t.path) == t.stamp.Load() {
			continue
		}
		if err := t.Reload(); err != nil {
			log.Warn("token file changed but cannot be loaded; keeping the tokens in use", "err", err)
			continue
		}
		log.Info("token file reloaded", "tokens", t.Len())
	}
}

// Check returns the role of token if it permits need. Every digest is
// compared, in constant time, whatever matches.
func (t *Tokens) Check(token string, need Role) (Role, error) {
	if need == None {
		return None, nil
	}
	if token == "" {
		return None, ErrNoToken
	}
	d := sha256.Sum256([]byte(token))
	found, role := 0, None
	for _, e := range *t.entries.Load() {
		m := subtle.ConstantTimeCompare(d[:], e.digest[:])
		found |= m
		if m == 1 {
			role = e.role
		}
	}
	if found == 0 {
		return None, ErrUnknownToken
	}
	if role < need {
		return role, ErrNotPermitted
	}
	return role, nil
}

// NewToken returns a random token (256 bits, URL-safe base64) and its
// token-file line for role.
func NewToken(role Role, name string) (token, line string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	token = "tkd_" + base64.RawURLEncoding.EncodeToString(b[:])
	line = role.String() + " " + Digest(token)
	if name != "" {
		line += " " + name
	}
	return token, line, nil
}

// Digest is the hex SHA-256 of a token, as token files hold it.
func Digest(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

func fileStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d.%d", fi.Size(), fi.ModTime().UnixNano())
}
