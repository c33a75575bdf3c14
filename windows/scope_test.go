package windows

import (
	"errors"
	"strings"
	"testing"
)

// fakeRoot is a container root filesystem in memory. Keys are components
// joined with \ and upper-cased, as NTFS compares names; a value starting
// with "->" is a link to the rest, "dir" a directory, "file" a file and
// "other" another reparse point.
type fakeRoot map[string]string

func (f fakeRoot) lstat(elems []string) (entryKind, string, error) {
	v, ok := f[strings.ToUpper(strings.Join(elems, `\`))]
	switch {
	case !ok:
		return kindMissing, "", nil
	case strings.HasPrefix(v, "->"):
		return kindLink, v[2:], nil
	case v == "dir":
		return kindDir, "", nil
	case v == "file":
		return kindFile, "", nil
	default:
		return kindOther, "", nil
	}
}

func TestResolveInRoot(t *testing.T) {
	root := fakeRoot{
		`PROGRAMDATA`:                   "dir",
		`PROGRAMDATA\DOCKER`:            "dir",
		`WINDOWS`:                       "dir",
		`APP`:                           "dir",
		`APP\CONFIG`:                    "file",
		`ABS`:                           `->C:\Windows`,
		`ROOTED`:                        `->\Windows\System32`,
		`UP`:                            `->..\..\..\..`,
		`UPWIN`:                         `->..\..\Windows`,
		`REL`:                           `->app`,
		`APP\SELF`:                      `->.`,
		`APP\PARENT`:                    `->..\ProgramData`,
		`LOOP`:                          `->loop`,
		`OTHERDRIVE`:                    `->D:\data`,
		`VOLUME`:                        `->\\?\Volume{0a0b}\x`,
		`UNC`:                           `->\\server\share`,
		`NTPATH`:                        `->\??\C:\Windows`,
		`DRIVEREL`:                      `->C:Windows`,
		`STREAM`:                        `->app\x:s`,
		`DEDUP`:                         "other",
		`PROGRAMDATA\DOCKER\SECRETS`:    `->/ProgramData/Docker/s2`,
		`PROGRAMDATA\DOCKER\S2`:         "dir",
		`CHAIN1`:                        `->chain2`,
		`CHAIN2`:                        `->C:\chain3`,
		`CHAIN3`:                        `->app`,
		`EMPTY`:                         `->`,
		`DEVICE`:                        `->app\NUL.txt`,
		`DOTTED`:                        `->app.`,
		`PROGRAMDATA\DOCKER\LINKTOROOT`: `->C:`,
	}
	tests := []struct {
		path string
		want string // resolved, \-joined; "!" + text: an error containing text
	}{
		{`ProgramData\Docker\secrets\x`, `ProgramData\Docker\s2\x`},
		{`new\dir\x`, `new\dir\x`},
		{`app\config`, `app\config`},
		{`app\config\x`, "!is a file"},
		{`abs\x`, `Windows\x`},
		{`rooted\x`, `Windows\System32\x`},
		{`up\x`, `x`},
		{`upwin\x`, `Windows\x`},
		{`rel\x`, `app\x`},
		{`app\self\self\x`, `app\x`},
		{`app\parent\Docker`, `ProgramData\Docker`},
		{`..\..\x`, `x`},
		{`app\..\..\x`, `x`},
		{`chain1\x`, `app\x`},
		{`ProgramData\Docker\linktoroot\x`, `x`},
		{`loop\x`, "!more than 63 links"},
		{`otherdrive\x`, "!outside the container"},
		{`volume\x`, "!outside the container"},
		{`unc\x`, "!outside the container"},
		{`ntpath\x`, "!outside the container"},
		{`driverel\x`, "!outside the container"},
		{`stream`, "!outside the container"},
		{`dedup\x`, "!neither a link nor a junction"},
		{`empty\x`, "!empty target"},
		{`device\x`, "!reserved device name"},
		{`dotted\x`, "!ends in a dot"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := resolveInRoot(root, strings.Split(tt.path, `\`))
			if strings.HasPrefix(tt.want, "!") {
				if err == nil || !strings.Contains(err.Error(), tt.want[1:]) {
					t.Fatalf("resolveInRoot(%q) = %q, %v; want an error with %q", tt.path, got, err, tt.want[1:])
				}
				return
			}
			if err != nil {
				t.Fatalf("resolveInRoot(%q): %v", tt.path, err)
			}
			if g := strings.Join(got, `\`); g != tt.want {
				t.Fatalf("resolveInRoot(%q) = %q, want %q", tt.path, g, tt.want)
			}
		})
	}
}

func TestResolveInRootOutsideIsTyped(t *testing.T) {
	_, err := resolveInRoot(fakeRoot{`X`: `->\\?\GLOBALROOT\Device\HarddiskVolume1`}, []string{"x", "y"})
	if !errors.Is(err, ErrOutsideRoot) {
		t.Fatalf("err = %v, want ErrOutsideRoot", err)
	}
}

func TestResolveInRootError(t *testing.T) {
	boom := errors.New("access denied")
	_, err := resolveInRoot(errRoot{boom}, []string{"x"})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}

type errRoot struct{ err error }

func (e errRoot) lstat([]string) (entryKind, string, error) { return 0, "", e.err }

// FuzzParseLinkTarget checks that an accepted link target never keeps a
// drive, a colon or an empty component, whatever an image holds.
func FuzzParseLinkTarget(f *testing.F) {
	for _, s := range []string{`C:\x`, `\x`, `..\x`, `\\?\Volume{1}\`, `D:\`, `C:x`, `a/b`, `x:y`, `\??\C:\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		_, elems, err := parseLinkTarget(target)
		if err != nil {
			return
		}
		for _, e := range elems {
			if e == "" || strings.ContainsAny(e, `:\/`) {
				t.Fatalf("parseLinkTarget(%q) gave component %q", target, e)
			}
		}
	})
}

// FuzzResolveInRoot builds a root from the fuzzer's links and checks that
// whatever it holds, a resolved path has no empty, "." or ".." component
// and crosses no link: joined to the root on the host it cannot leave it.
func FuzzResolveInRoot(f *testing.F) {
	f.Add(`a\b\c`, `a=>C:\x;x=>..\..\y;y\b=>b2`)
	f.Add(`a\b`, `a=>a`)
	f.Add(`p\q\r`, `p=>\;q=>..`)
	f.Add(`x\..\y`, `y=>x\y`)
	f.Fuzz(func(t *testing.T, path, links string) {
		root := fakeRoot{}
		for _, l := range strings.Split(links, ";") {
			from, to, ok := strings.Cut(l, "=>")
			if ok && from != "" {
				root[strings.ToUpper(from)] = "->" + to
			}
		}
		got, err := resolveInRoot(root, strings.Split(path, `\`))
		if err != nil {
			return
		}
		for i, e := range got {
			if e == "" || e == "." || e == ".." {
				t.Fatalf("resolveInRoot(%q) with %q = %q: component %q", path, links, got, e)
			}
			if k, _, _ := root.lstat(got[:i+1]); k == kindLink {
				t.Fatalf("resolveInRoot(%q) with %q = %q: %q is a link", path, links, got, strings.Join(got[:i+1], `\`))
			}
		}
	})
}
