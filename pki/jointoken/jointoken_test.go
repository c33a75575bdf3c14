package jointoken

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	ca := []byte("not really DER but bytes all the same")
	tok := Token{CADigest: Digest(ca), Secret: secret}
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatalf("Parse(%q): %v", tok, err)
	}
	if got != tok {
		t.Fatalf("got %+v, want %+v", got, tok)
	}
	if !got.PinsCA(ca) {
		t.Fatal("token does not pin the CA it was made for")
	}
	if got.PinsCA(append(ca, 'x')) {
		t.Fatal("token pins a different CA")
	}
	if !got.SecretEqual(secret) || got.SecretEqual(secret+"a") {
		t.Fatal("SecretEqual is wrong")
	}
	if strings.Contains(got.Redacted(), secret) {
		t.Fatal("Redacted leaks the secret")
	}
}

func TestParseRejects(t *testing.T) {
	secret, _ := NewSecret()
	digest := Digest([]byte("ca"))
	for name, s := range map[string]string{
		"empty":          "",
		"swarm token":    "SWMTKN-1-" + digest + "-" + secret,
		"version 2":      "LBXTKN-2-" + digest + "-" + secret,
		"no secret":      Prefix + digest,
		"empty secret":   Prefix + digest + "-",
		"short digest":   Prefix + digest[:10] + "-" + secret,
		"upper digest":   Prefix + strings.ToUpper(digest) + "-" + secret,
		"non-hex digest": Prefix + strings.Repeat("z", 64) + "-" + secret,
		"short secret":   Prefix + digest + "-abc",
		"bad alphabet":   Prefix + digest + "-" + strings.Repeat("1", len(secret)),
		"extra dash":     Prefix + digest + "-" + secret + "-x",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) = %v, want ErrMalformed", s, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	secret, _ := NewSecret()
	f.Add(Prefix + Digest(nil) + "-" + secret)
	f.Add("LBXTKN-1--")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever parses must format back to the same string.
		if tok.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, tok.String())
		}
	})
}
