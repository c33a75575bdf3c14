//go:build linux

package procmem

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	status := []byte("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nVmLck:\t       0 kB\nBad:\tkB\n")
	for _, c := range []struct {
		field string
		want  int64
		ok    bool
	}{
		{"VmRSS", 1024, true},
		{"VmHWM", 2048, true},
		{"VmLck", 0, true},
		{"Vm", 0, false}, // a prefix of a field is not the field
		{"RssAnon", 0, false},
		{"Bad", 0, false},
	} {
		n, err := parse(status, c.field)
		if (err == nil) != c.ok || n != c.want {
			t.Errorf("%s: %d, %v; want %d (found %v)", c.field, n, err, c.want, c.ok)
		}
	}
	if KiB(t, os.Getpid(), "VmRSS") <= 0 {
		t.Fatal("this process has no resident memory")
	}
}
