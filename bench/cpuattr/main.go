// Command cpuattr says where the machine's CPU time went during each
// variant's containers, from a system-wide perf recording taken while
// BenchmarkShimLifecycle runs with LOCKBOX_BENCH_SPANS set: every sample
// falls in the span of the container that was running then, and so counts
// for that container's variant. It prints, per variant, the CPU time per
// container of each program (the executable a sample's stack starts in:
// containerd-shim-runc-v2 and containerd-shim-lockbox-v2, the manager's
// lockbox and the agent's node/lockbox, the benchmark's test binary with
// its in-process test agent; a kernel thread by its name), and each
// variant's difference to the first (the baseline). The machine's CPU
// meter (cpuacct) says how much a claim costs; this says whose it is.
//
// Record (as root; samples with call chains, on CLOCK_MONOTONIC, which
// the spans are in):
//
//	LOCKBOX_BENCH_SPANS=/tmp/spans LOCKBOX_BIN=$PWD/bin \
//	  go test -run '^$' -bench ShimLifecycle -benchtime 300x ./bench &
//	perf record -a -g -F 999 -k CLOCK_MONOTONIC -o cpu.data -- sleep 120
//	perf script -i cpu.data -F comm,pid,time,ip,sym,dso --ns | \
//	  go run ./bench/cpuattr -spans /tmp/spans -hz 999
//
// The benchmark removes its binaries when it ends: record while it runs,
// and run perf script before it ends or with copies of the binaries at the
// paths perf names, or the frames have no symbols (the programs are still
// told apart by their files' names).
//
// -program NAME -frames PREFIX splits one program's time instead, by the
// outermost frame whose function starts with PREFIX (for example
// github.com/lockbox-project/lockbox/): which of Lockbox's functions a
// claim's time in the shim went to. -spill attributes each sample to the
// span before the one it fell in: work a container leaves behind (a shim's
// exit, an agent's wipe) lands in the next container's span, whose variant
// is drawn at random, so it shows in the baseline's row of the plain
// attribution as much as in the claim's; -spill shows it against the
// container that left it.
//
// A sample is 1/hz seconds of one CPU's time. At 999 Hz and 300
// containers a variant, a figure of 1 ms per container rests on about 300
// samples: read differences under 0.1 ms as noise.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

func main() {
	spansFile := flag.String("spans", "", "the spans LOCKBOX_BENCH_SPANS wrote")
	hz := flag.Float64("hz", 999, "perf record's sampling frequency (-F)")
	program := flag.String("program", "", "split this program's time by frame (with -frames)")
	frames := flag.String("frames", "", "the function prefix -program's time is split by")
	spill := flag.Bool("spill", false, "attribute each sample to the span before the one it fell in")
	top := flag.Int("top", 25, "rows to print")
	flag.Parse()
	if *spansFile == "" {
		fmt.Fprintln(os.Stderr, "cpuattr: -spans is required")
		os.Exit(2)
	}
	f, err := os.Open(*spansFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpuattr:", err)
		os.Exit(1)
	}
	spans, variants, err := readSpans(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpuattr:", err)
		os.Exit(1)
	}
	key := byProgram
	if *program != "" {
		key = byFrame(*program, *frames)
	}
	a := newAttribution(spans, variants, *spill)
	if err := readSamples(bufio.NewReader(os.Stdin), func(s sample) { a.add(s, key(s)) }); err != nil {
		fmt.Fprintln(os.Stderr, "cpuattr:", err)
		os.Exit(1)
	}
	a.print(os.Stdout, 1000 / *hz, *top)
}

// span is one container's lifecycle: its variant, and when it ran in
// CLOCK_MONOTONIC nanoseconds.
type span struct {
	variant    string
	start, end int64
}

// readSpans reads LOCKBOX_BENCH_SPANS's lines, "variant start end", and
// returns them in time order, with the variants in the order the file
// first names them (the benchmark's: the baseline first).
func readSpans(r io.Reader) ([]span, []string, error) {
	var spans []span
	var variants []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) != 3 {
			return nil, nil, fmt.Errorf("spans line %d: want \"variant start end\", got %q", n, sc.Text())
		}
		s, err1 := strconv.ParseInt(fs[1], 10, 64)
		e, err2 := strconv.ParseInt(fs[2], 10, 64)
		if err1 != nil || err2 != nil || e < s {
			return nil, nil, fmt.Errorf("spans line %d: bad times %q", n, sc.Text())
		}
		if !seen[fs[0]] {
			seen[fs[0]] = true
			variants = append(variants, fs[0])
		}
		spans = append(spans, span{fs[0], s, e})
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(spans) == 0 {
		return nil, nil, fmt.Errorf("no spans")
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	return spans, variants, nil
}

// frame is one entry of a sample's call chain.
type frame struct{ sym, dso string }

// sample is one perf sample: the command, the time in nanoseconds and the
// call chain, innermost first.
type sample struct {
	comm  string
	t     int64
	stack []frame
}

// readSamples parses perf script's output with call chains (-F
// comm,pid,time,ip,sym,dso --ns): a header line "comm pid secs.nanos:"
// and one line "ip sym+off (dso)" per frame, a blank line after each
// sample.
func readSamples(r *bufio.Reader, each func(sample)) error {
	var cur *sample
	flush := func() {
		if cur != nil {
			each(*cur)
			cur = nil
		}
	}
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == '\t' || strings.HasPrefix(line, "        "):
			if cur != nil {
				cur.stack = append(cur.stack, parseFrame(line))
			}
		default:
			flush()
			if s, ok := parseHeader(line); ok {
				cur = &s
			}
		}
		if err == io.EOF {
			flush()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseHeader reads "comm pid secs.nanos:" (the command may hold spaces).
func parseHeader(line string) (sample, bool) {
	fs := strings.Fields(line)
	if len(fs) < 3 || !strings.HasSuffix(fs[len(fs)-1], ":") {
		return sample{}, false
	}
	t, ok := parseTime(strings.TrimSuffix(fs[len(fs)-1], ":"))
	if !ok {
		return sample{}, false
	}
	if _, err := strconv.Atoi(fs[len(fs)-2]); err != nil {
		return sample{}, false
	}
	return sample{comm: strings.Join(fs[:len(fs)-2], " "), t: t}, true
}

// parseTime reads perf's "secs.nanos" exactly (a float64 would round).
func parseTime(s string) (int64, bool) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) == 0 || len(frac) > 9 {
		return 0, false
	}
	si, err1 := strconv.ParseInt(sec, 10, 64)
	fi, err2 := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return si*1e9 + fi, true
}

// parseFrame reads "ip sym+off (dso)".
func parseFrame(line string) frame {
	line = strings.TrimSpace(line)
	_, rest, _ := strings.Cut(line, " ")
	var f frame
	if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
		f.dso = rest[i+2 : len(rest)-1]
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "+0x"); i >= 0 {
		rest = rest[:i]
	}
	f.sym = rest
	return f
}

// program names the executable a sample's stack starts in: the outermost
// frame in a file that is no shared library, the kernel or unknown; a
// sample with none (a kernel thread's, or one whose stack is lost) goes by
// its command, in brackets.
func program(s sample) string {
	for i := len(s.stack) - 1; i >= 0; i-- {
		d := s.stack[i].dso
		// "/" is what perf makes of runc's init once it has pivoted into
		// the container's root: its command names it better.
		if d == "" || d == "/" || strings.HasPrefix(d, "[") || strings.Contains(path.Base(d), ".so") {
			continue
		}
		// The agent is node/lockbox, the manager lockbox: keep the
		// directory of a build's own binaries.
		if dir := path.Base(path.Dir(d)); dir == "node" {
			return "node/" + path.Base(d)
		}
		return path.Base(d)
	}
	return "[" + s.comm + "]"
}

func byProgram(s sample) string { return program(s) }

// byFrame keys one program's samples by their outermost frame whose
// function starts with prefix ("(other)" when none does); other programs'
// samples are dropped.
func byFrame(prog, prefix string) func(sample) string {
	return func(s sample) string {
		if program(s) != prog {
			return ""
		}
		for i := len(s.stack) - 1; i >= 0; i-- {
			if strings.HasPrefix(s.stack[i].sym, prefix) {
				return strings.TrimPrefix(s.stack[i].sym, prefix)
			}
		}
		return "(other)"
	}
}

// attribution counts samples by the variant of the span they fell in and
// by key.
type attribution struct {
	spans    []span
	spill    bool
	variants []string       // the baseline first
	count    map[string]int // containers per variant
	samples  map[string]map[string]int
	outside  int
}

func newAttribution(spans []span, variants []string, spill bool) *attribution {
	a := &attribution{spans: spans, variants: variants, spill: spill, count: map[string]int{}, samples: map[string]map[string]int{}}
	for _, v := range variants {
		a.samples[v] = map[string]int{}
	}
	for _, s := range spans {
		a.count[s.variant]++
	}
	return a
}

// spanAt returns the index of the span that ran at t, -1 if none did. A
// sample between two spans (the benchmark's own bookkeeping) counts for
// the one before.
func (a *attribution) spanAt(t int64) int {
	i := sort.Search(len(a.spans), func(i int) bool { return a.spans[i].start > t }) - 1
	if i < 0 || (i == len(a.spans)-1 && t > a.spans[i].end) {
		return -1
	}
	return i
}

// add counts sample s under key; an idle CPU's samples, an empty key and
// samples outside every span are not counted.
func (a *attribution) add(s sample, key string) {
	if key == "" || s.comm == "swapper" {
		return
	}
	i := a.spanAt(s.t)
	if a.spill {
		i--
	}
	if i < 0 {
		a.outside++
		return
	}
	a.samples[a.spans[i].variant][key]++
}

// print writes, per key (the top rows by total), each variant's CPU time
// per container, then each variant's difference to the first.
func (a *attribution) print(w io.Writer, msPerSample float64, top int) {
	total := map[string]float64{}
	for _, v := range a.variants {
		for k, n := range a.samples[v] {
			total[k] += float64(n) / float64(a.count[v])
		}
	}
	keys := make([]string, 0, len(total))
	for k := range total {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if total[keys[i]] != total[keys[j]] {
			return total[keys[i]] > total[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > top {
		keys = keys[:top]
	}
	per := func(v, k string) float64 {
		return float64(a.samples[v][k]) * msPerSample / float64(a.count[v])
	}
	sum := func(v string) float64 {
		n := 0
		for _, c := range a.samples[v] {
			n += c
		}
		return float64(n) * msPerSample / float64(a.count[v])
	}
	head := fmt.Sprintf("%-34s", "CPU ms per container")
	for _, v := range a.variants {
		head += fmt.Sprintf(" %14s", clip(v, 14))
	}
	fmt.Fprintln(w, head)
	for _, k := range keys {
		line := fmt.Sprintf("%-34s", clip(k, 34))
		for _, v := range a.variants {
			line += fmt.Sprintf(" %14.3f", per(v, k))
		}
		fmt.Fprintln(w, line)
	}
	line := fmt.Sprintf("%-34s", "all (shown or not)")
	for _, v := range a.variants {
		line += fmt.Sprintf(" %14.3f", sum(v))
	}
	fmt.Fprintln(w, line)
	base := a.variants[0]
	fmt.Fprintf(w, "\ndifference to %s, ms per container\n", base)
	fmt.Fprintln(w, head)
	for _, k := range keys {
		line := fmt.Sprintf("%-34s", clip(k, 34))
		for _, v := range a.variants {
			line += fmt.Sprintf(" %+14.3f", per(v, k)-per(base, k))
		}
		fmt.Fprintln(w, line)
	}
	line = fmt.Sprintf("%-34s", "all (shown or not)")
	for _, v := range a.variants {
		line += fmt.Sprintf(" %+14.3f", sum(v)-sum(base))
	}
	fmt.Fprintln(w, line)
	counts := make([]string, 0, len(a.variants))
	for _, v := range a.variants {
		counts = append(counts, fmt.Sprintf("%s %d", v, a.count[v]))
	}
	fmt.Fprintf(w, "\ncontainers: %s; samples outside every span: %d\n", strings.Join(counts, ", "), a.outside)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
