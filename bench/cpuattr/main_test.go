package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// perfOut is perf script's output (-F comm,pid,time,ip,sym,dso --ns) for
// five samples: a shim's, the agent's (re-executed, so its command is
// "exe"), an idle CPU's, a kernel thread's and one after every span.
const perfOut = `containerd-shim 4242 100.000000500:
	ffffffff8100 do_syscall_64+0x5e ([kernel.kallsyms])
	4a2b3c github.com/lockbox-project/lockbox/linux.attachFd+0x1f (/tmp/B1/003/containerd-shim-lockbox-v2)
	4a2b00 github.com/lockbox-project/lockbox/plugin/shim.(*service).Create+0x2a0 (/tmp/B1/003/containerd-shim-lockbox-v2)
	478001 runtime.goexit.abi0+0x1 (/tmp/B1/003/containerd-shim-lockbox-v2)

exe 5151 100.000001000:
	7f0001 __memset_avx2 (/usr/lib/x86_64-linux-gnu/libc.so.6)
	4b0001 main.main+0x10 (/tmp/B1/003/node/lockbox)
	7f0002 __libc_start_call_main+0x7a (/usr/lib/x86_64-linux-gnu/libc.so.6)

swapper 0 100.000001500:
	ffffffff8200 default_idle+0x9 ([kernel.kallsyms])

kworker/u8:2-ev 77 100.000002500:
	ffffffff8300 process_one_work+0x1 ([kernel.kallsyms])

containerd-shim 4243 100.000009000:
	478001 runtime.goexit.abi0+0x1 (/tmp/B1/003/containerd-shim-runc-v2)
`

// spansIn: a baseline container from 100.000000000 to 100.000002000 s, a
// claim's after it until 100.000003000 s, written baseline first.
const spansIn = `runc-shim 100000000000 100000002000
lockbox-shim-claim 100000002000 100000003000
`

func attribute(t *testing.T, spill bool, key func(sample) string) *attribution {
	t.Helper()
	spans, variants, err := readSpans(strings.NewReader(spansIn))
	if err != nil {
		t.Fatal(err)
	}
	a := newAttribution(spans, variants, spill)
	if err := readSamples(bufio.NewReader(strings.NewReader(perfOut)), func(s sample) { a.add(s, key(s)) }); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAttributionByProgram(t *testing.T) {
	a := attribute(t, false, byProgram)
	if got := a.variants; len(got) != 2 || got[0] != "runc-shim" {
		t.Fatalf("variants %v, want the baseline first", got)
	}
	want := map[string]map[string]int{
		"runc-shim":          {"containerd-shim-lockbox-v2": 1, "node/lockbox": 1},
		"lockbox-shim-claim": {"[kworker/u8:2-ev]": 1},
	}
	for v, keys := range want {
		if len(a.samples[v]) != len(keys) {
			t.Errorf("%s: %v, want %v", v, a.samples[v], keys)
		}
		for k, n := range keys {
			if a.samples[v][k] != n {
				t.Errorf("%s %s: %d samples, want %d", v, k, a.samples[v][k], n)
			}
		}
	}
	// The idle CPU's sample is not counted; the last one fell after every
	// span.
	if a.outside != 1 {
		t.Errorf("outside = %d, want 1", a.outside)
	}
}

func TestAttributionSpill(t *testing.T) {
	a := attribute(t, true, byProgram)
	// Each sample counts for the span before its own: the kworker's (in
	// the claim's span) for the baseline, the baseline's own samples for
	// none.
	if got := a.samples["runc-shim"]["[kworker/u8:2-ev]"]; got != 1 {
		t.Errorf("spilled kworker sample: %d, want 1", got)
	}
	if n := len(a.samples["lockbox-shim-claim"]); n != 0 {
		t.Errorf("claim has %d keys, want none", n)
	}
	if a.outside != 3 {
		t.Errorf("outside = %d, want 3 (two before the first span, one after the last)", a.outside)
	}
}

func TestAttributionByFrame(t *testing.T) {
	a := attribute(t, false, byFrame("containerd-shim-lockbox-v2", "github.com/lockbox-project/lockbox/"))
	// The outermost matching frame names the sample; other programs'
	// samples are dropped.
	if got := a.samples["runc-shim"]; len(got) != 1 || got["plugin/shim.(*service).Create"] != 1 {
		t.Errorf("frames %v, want one sample in plugin/shim.(*service).Create", got)
	}
}

func TestPrint(t *testing.T) {
	a := attribute(t, false, byProgram)
	var out bytes.Buffer
	a.print(&out, 1, 10)
	s := out.String()
	for _, want := range []string{
		"difference to runc-shim",
		"containers: runc-shim 1, lockbox-shim-claim 1; samples outside every span: 1",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// The kworker's one sample is 1 ms in the claim's one container, and
	// +1 against the baseline's none.
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "[kworker/u8:2-ev]") && strings.Contains(l, "+") {
			if f := strings.Fields(l); f[len(f)-1] != "+1.000" {
				t.Errorf("difference line %q, want +1.000 last", l)
			}
		}
	}
}

func TestParseTime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"35766.275700568", 35766275700568, true},
		{"1.5", 1500000000, true},
		{"12", 0, false},
		{"1.1234567891", 0, false},
		{"x.1", 0, false},
	} {
		got, ok := parseTime(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("parseTime(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestReadSpansRefusesBadLines(t *testing.T) {
	for _, in := range []string{"", "a 1\n", "a 2 1\n", "a x 1\n"} {
		if _, _, err := readSpans(strings.NewReader(in)); err == nil {
			t.Errorf("readSpans(%q): no error", in)
		}
	}
}
