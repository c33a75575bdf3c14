package main

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func TestNaturalLess(t *testing.T) {
	// docker/cli sorts ls rows with sortorder.NaturalLess.
	in := []string{"10-foo", "web", "2-foo", "1-foo", "a10", "a2", "a02", "A1", "db_pw", "db", "a"}
	want := []string{"1-foo", "2-foo", "10-foo", "A1", "a", "a2", "a02", "a10", "db", "db_pw", "web"}
	sortByName(in, func(s string) string { return s })
	if !slices.Equal(in, want) {
		t.Fatalf("got %q, want %q", in, want)
	}
}

func FuzzNaturalLess(f *testing.F) {
	for _, s := range [][2]string{{"1-foo", "10-foo"}, {"a02", "a2"}, {"", "0"}, {"x9", "x10"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, ba := naturalLess(a, b), naturalLess(b, a)
		if ab && ba {
			t.Fatalf("%q and %q are each less than the other", a, b)
		}
		if !ab && !ba && a != b {
			t.Fatalf("%q and %q are distinct but neither is less", a, b)
		}
		s := []string{a, b, a + b, b + a}
		sort.SliceStable(s, func(i, j int) bool { return naturalLess(s[i], s[j]) })
		for i := 1; i < len(s); i++ {
			if naturalLess(s[i], s[i-1]) {
				t.Fatalf("not sorted: %q", s)
			}
		}
	})
}

// FuzzParseFileMode: a mode Lockbox accepts is the mode docker reads from
// the same text, and no accepted text meant another mode to earlier
// Lockbox (octal always) unless that reading failed.
func FuzzParseFileMode(f *testing.F) {
	for _, s := range []string{"0440", "0o440", "292", "440", "0", "0x124", "7", "1_0", "08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseFileMode(s)
		if err != nil {
			return
		}
		docker, derr := strconv.ParseUint(s, 0, 32)
		if derr != nil || uint32(docker) != m {
			t.Fatalf("%q: Lockbox %d, docker %d (%v)", s, m, docker, derr)
		}
		if old, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32); err == nil && uint32(old) != m {
			t.Fatalf("%q: accepted as %#o, earlier Lockbox read %#o", s, m, old)
		}
	})
}

func FuzzSecretFilter(f *testing.F) {
	for _, s := range []string{"name=db", "label=a=b", "id=x", "names=DB", "foo=1", "label=", "="} {
		f.Add(s, "db_pw", "abc")
	}
	f.Fuzz(func(t *testing.T, flag, name, id string) {
		ff := filterFlag{}
		if ff.Set(flag) != nil {
			return
		}
		sf, err := parseSecretFilter(ff)
		if err != nil {
			return
		}
		// A filter on names or IDs never keeps what none of its values
		// match, and a filter with no name/id values keeps everything
		// its labels allow.
		got := sf.match(id, name, map[string]string{})
		if len(sf.names)+len(sf.namePrefixes)+len(sf.idPrefixes) == 0 && len(sf.labels) == 0 && !got {
			t.Fatalf("empty filter dropped %q", name)
		}
		if len(sf.labels) > 0 && got {
			t.Fatalf("label filter %q kept an unlabelled secret", flag)
		}
	})
}
