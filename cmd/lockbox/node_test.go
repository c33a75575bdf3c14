package main

import (
	"context"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/types"
)

func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"web-1.example.com", "web-1.example.com"},
		{"héllo wörld", "héllo wörld"},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"title\x1b]0;pwned\a", `title\x1b]0;pwned\a`},
		{"line\nbreak\r", `line\nbreak\r`},
		{"c1\u009bcsi", `c1\u009bcsi`},
		{"bidi\u202eevil", `bidi\u202eevil`},
		{"del\x7f", `del\x7f`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"real \ufffd stays", "real \ufffd stays"},
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// A node record written before descriptions were validated (or by a
// manager that does not validate) still cannot drive the operator's
// terminal through node ls / node inspect.
func TestCLINodeOutputIsPrintable(t *testing.T) {
	ctx := context.Background()
	e := newCLIEnv(t, "")
	evil := "host\x1b]0;pwned\a\x1b[2J\u009b31m"
	n := &types.Node{
		Id:          "n0000000000000000000000001",
		Meta:        &types.Meta{},
		Spec:        &types.NodeSpec{Labels: map[string]string{"k\x1b[1m": "v\x1b[0m"}},
		Description: &types.NodeDescription{Hostname: evil, Platform: &types.Platform{Os: "linux\x1b[5m", Architecture: "amd64"}, AgentVersion: "v\x1b[31m", Warnings: []string{"w\x1b[2J"}},
		Reported:    &types.NodeDescription{Hostname: evil},
	}
	b, err := proto.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Client().Put(ctx, e.store.Prefix()+"nodes/"+n.Id, string(b)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"node", "ls"},
		{"node", "ls", "--format", "json"},
		{"node", "ls", "--format", "{{.Hostname}} {{.OS}} {{.Labels}}"},
		{"node", "inspect", n.Id},
		{"node", "inspect", "--format", "{{.Description.Hostname}} {{.Reported.Hostname}} {{.Description.Warnings}}", n.Id},
	} {
		out := e.mustRun(t, "", args...)
		if strings.ContainsAny(out, "\x1b\a\u009b") {
			t.Errorf("lockbox %s printed a raw control character: %q", strings.Join(args, " "), out)
		}
		if !strings.Contains(out, "host") {
			t.Errorf("lockbox %s lost the hostname: %q", strings.Join(args, " "), out)
		}
	}
}

func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"plain", "a\x1b[2Jb", "\xff\xfe", "bidi\u202e", "c1\u009b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := printable(s)
		if !utf8.ValidString(out) {
			t.Fatalf("printable(%q) = %q is not UTF-8", s, out)
		}
		for _, r := range out {
			if !unicode.IsPrint(r) {
				t.Fatalf("printable(%q) = %q keeps %U", s, out, r)
			}
		}
	})
}
