package security_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/topkd/topkd/server/security"
)

func TestTokenRoles(t *testing.T) {
	var lines []string
	tokens := map[security.Role]string{}
	for _, r := range []security.Role{security.Read, security.Write, security.Admin} {
		tok, line, err := security.NewToken(r, r.String()+"-user")
		if err != nil {
			t.Fatal(err)
		}
		tokens[r], lines = tok, append(lines, line)
	}
	ts, err := security.ParseTokens("# roles\n" + strings.Join(lines, "\n") + "\n")
	if err != nil {
		t.Fatal(err)
	}
	for have, tok := range tokens {
		for _, need := range []security.Role{security.None, security.Read, security.Write, security.Admin} {
			role, err := ts.Check(tok, need)
			if ok := err == nil; ok != (have >= need) {
				t.Errorf("%v token for a %v call: err %v", have, need, err)
			}
			if err != nil && !errors.Is(err, security.ErrNotPermitted) {
				t.Errorf("%v token for a %v call: err %v, want ErrNotPermitted", have, need, err)
			}
			if need != security.None && role != have {
				t.Errorf("role %v, want %v", role, have)
			}
		}
	}
	if _, err := ts.Check("", security.Read); !errors.Is(err, security.ErrNoToken) {
		t.Errorf("no token: %v", err)
	}
	if _, err := ts.Check(tokens[security.Admin]+"x", security.Read); !errors.Is(err, security.ErrUnknownToken) {
		t.Errorf("unknown token: %v", err)
	}
}

func TestTokenFileErrorsDoNotEchoTokens(t *testing.T) {
	tok, _, _ := security.NewToken(security.Admin, "")
	for _, text := range []string{
		"admin " + tok, // the token itself pasted instead of its digest
		"root " + security.Digest(tok),
		"admin",
		"# nothing\n",
	} {
		_, err := security.ParseTokens(text)
		if err == nil {
			t.Errorf("%q parsed", text)
			continue
		}
		if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), security.Digest(tok)) {
			t.Errorf("error %q repeats the file's secret", err)
		}
	}
}

func TestTokenReloadRevokes(t *testing.T) {
	a, la, _ := security.NewToken(security.Write, "a")
	b, lb, _ := security.NewToken(security.Read, "b")
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(la+"\n"+lb+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := security.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Check(a, security.Write); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(lb+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Check(a, security.Read); !errors.Is(err, security.ErrUnknownToken) {
		t.Errorf("revoked token: %v", err)
	}
	if _, err := ts.Check(b, security.Read); err != nil {
		t.Errorf("kept token: %v", err)
	}
	// A broken file keeps the tokens in use.
	if err := os.WriteFile(path, []byte("admin nothex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload(); err == nil {
		t.Error("broken file reloaded")
	}
	if _, err := ts.Check(b, security.Read); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func TestGossipKey(t *testing.T) {
	k, err := security.NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := security.ParseGossipKey(k)
	if err != nil || len(b) != 32 {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ="} {
		if _, err := security.ParseGossipKey(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
