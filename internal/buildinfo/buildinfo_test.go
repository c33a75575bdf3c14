package buildinfo

import (
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.GoVersion != runtime.Version() || i.OS != runtime.GOOS || i.Arch != runtime.GOARCH {
		t.Fatalf("Get() = %+v", i)
	}
}

func TestLinkTimeVersionWins(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v9.9.9"
	if got := Get().Version; got != "v9.9.9" {
		t.Fatalf("Version = %q, want the -ldflags value", got)
	}
}

func TestLinkTimeCommit(t *testing.T) {
	old := commit
	t.Cleanup(func() { commit = old })
	commit = "0123456789abcdef0123456789abcdef01234567"
	if got := Get().Commit; got == "" {
		t.Fatal("Commit empty with a link-time commit")
	}
}

func TestShortCommit(t *testing.T) {
	for _, c := range []struct {
		in   Info
		want string
	}{
		{Info{}, "unknown"},
		{Info{Commit: "0123456789abcdef"}, "0123456"},
		{Info{Commit: "0123456789abcdef", Modified: true}, "0123456-dirty"},
		{Info{Commit: "abc"}, "abc"},
	} {
		if got := c.in.ShortCommit(); got != c.want {
			t.Errorf("%+v.ShortCommit() = %q, want %q", c.in, got, c.want)
		}
	}
}
