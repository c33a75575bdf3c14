// Command phases splits the runc calls of containers started through
// containerd into phases, from a system-wide perf recording taken while
// BenchmarkContainerLifecycle runs: for each variant (runc itself, or a
// lockbox-runtime build, plain, claiming with attach-after-create, or with
// the createContainer hook) and each of the shim's runc calls (create,
// start, delete, and the cleanup delete), the median time from the shim's
// fork to each event of that call.
//
// Record (as root, while the benchmark runs; tracepoints cost little):
//
//	perf record -k CLOCK_MONOTONIC -a -o phases.data \
//	  -e sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit \
//	  -e syscalls:sys_enter_connect,syscalls:sys_enter_sendmsg,syscalls:sys_exit_recvmsg \
//	  -e syscalls:sys_enter_execve,syscalls:sys_exit_wait4 \
//	  -e syscalls:sys_enter_fsopen,syscalls:sys_exit_fsmount,syscalls:sys_enter_open_tree \
//	  -e syscalls:sys_enter_setns,syscalls:sys_exit_move_mount &
//	LOCKBOX_BIN=$PWD/bin go test -run '^$' -bench ContainerLifecycle -benchtime 30x ./bench
//	kill -INT %1
//	perf script -i phases.data -F comm,pid,tid,time,event,trace | go run ./bench/phases -bin $PWD/bin/
//
// Times are from the shim's fork of the call's process; "exec X" is when
// the kernel had loaded X, "enter execve" when lockbox-runtime asked for
// runc, "runc child exit" when a runc it ran as a child (claiming create)
// began to exit, "wait4 return" when lockbox-runtime had reaped it. The
// agent's side of a request is between "send" and the last "recvmsg
// return"; the agent's own events ("agent: ...", from the processes
// started from the executables named by -agent: the benchmark serves the
// socket itself, or a real "lockbox agent") split that time.
// Only processes started from -bin (and -compare) count as
// lockbox-runtime: other users of the machine do not mix in.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

type event struct {
	t    float64 // ms
	tid  int
	name string
	comm string
}

type proc struct {
	pid, ppid int
	fork      float64
	execs     []exec
	exit      float64
	events    []event
}

type exec struct {
	t    float64
	file string
}

var lineRE = regexp.MustCompile(`^\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$`)
var kvRE = regexp.MustCompile(`(\w+)=(\S+)`)

type forkInfo struct {
	ppid int
	t    float64
}

// parse returns the processes that exec'd, by pid, and every fork (of
// processes and threads alike) by child.
func parse(r io.Reader) (map[int]*proc, map[int]forkInfo) {
	forks := map[int]forkInfo{}
	procs := map[int]*proc{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[2])
		tid, _ := strconv.Atoi(m[3])
		sec, _ := strconv.ParseFloat(m[4], 64)
		t := sec * 1000
		name := m[5]
		kv := map[string]string{}
		for _, x := range kvRE.FindAllStringSubmatch(m[6], -1) {
			kv[x[1]] = x[2]
		}
		switch name {
		case "sched:sched_process_fork":
			c, _ := strconv.Atoi(kv["child_pid"])
			forks[c] = forkInfo{pid, t}
		case "sched:sched_process_exec":
			p, _ := strconv.Atoi(kv["pid"])
			pr := procs[p]
			if pr == nil {
				f := forks[p]
				pr = &proc{pid: p, ppid: f.ppid, fork: f.t}
				procs[p] = pr
			}
			pr.execs = append(pr.execs, exec{t, kv["filename"]})
		}
		if pr := procs[pid]; pr != nil {
			pr.events = append(pr.events, event{t, tid, name, m[1]})
			if name == "sched:sched_process_exit" && tid == pid {
				pr.exit = t
			}
		}
	}
	return procs, forks
}

// agentEvents returns, in time order, the events of the processes that
// serve agent sockets: those started from one of the named executables
// (the benchmark's test agent serves from the test binary; the real agent
// re-executes itself, so its later names say nothing). Each event's comm
// is set to that executable's name.
func agentEvents(procs map[int]*proc, names []string) []event {
	var evs []event
	for _, p := range procs {
		first := path.Base(p.execs[0].file)
		for _, n := range names {
			if first != n {
				continue
			}
			for _, e := range p.events {
				e.comm = first
				evs = append(evs, e)
			}
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].t < evs[j].t })
	return evs
}

func main() {
	bin := flag.String("bin", "", "directory prefix of the lockbox-runtime under test")
	compare := flag.String("compare", "", "path prefix of a second lockbox-runtime build (LOCKBOX_BENCH_COMPARE)")
	agentNames := flag.String("agent", "bench.test,lockbox", "executables (comma-separated) whose processes serve agent sockets: the benchmark's test agent, the real agent")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "usage: perf script ... | phases -bin DIR/ [-compare PATH]")
		os.Exit(2)
	}
	procs, forks := parse(os.Stdin)
	agentEvents := agentEvents(procs, strings.Split(*agentNames, ","))
	children := map[int][]*proc{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	for _, ps := range children {
		sort.Slice(ps, func(i, j int) bool { return ps[i].fork < ps[j].fork })
	}
	build := func(p *proc) string {
		f := p.execs[0].file
		switch {
		case path.Base(f) == "runc":
			return "runc"
		case *compare != "" && strings.HasPrefix(f, *compare):
			return "compare"
		case strings.HasPrefix(f, *bin):
			return "wrapper"
		}
		return ""
	}
	// hooked reports whether a lockbox-runtime ran below p: the
	// createContainer hook, which runc's init (a clone that never execs)
	// starts.
	hooked := func(p *proc) bool {
		for _, q := range procs {
			if path.Base(q.execs[0].file) != "lockbox-runtime" || q.fork < p.fork || (p.exit > 0 && q.fork > p.exit) {
				continue
			}
			for a, n := q.ppid, 0; a != 0 && n < 64; n++ {
				if a == p.pid {
					return true
				}
				a = forks[a].ppid
			}
		}
		return false
	}
	samples := map[[3]string][]float64{}
	add := func(v, call, phase string, d float64) {
		k := [3]string{v, call, phase}
		samples[k] = append(samples[k], d)
	}
	for _, shim := range procs {
		if path.Base(shim.execs[len(shim.execs)-1].file) != "containerd-shim-runc-v2" {
			continue
		}
		var calls []*proc
		for _, c := range children[shim.pid] {
			if b := build(c); b != "" && c.exit > 0 {
				calls = append(calls, c)
			}
		}
		names := []string{"create", "start", "delete"}
		variant := ""
		switch {
		case len(calls) == 1:
			// The shim that containerd runs to clean up after a task.
			names = []string{"cleanup delete"}
			variant = build(calls[0])
		case len(calls) >= 3:
			create := calls[0]
			variant = build(create)
			switch {
			case variant == "runc":
			case len(create.execs) == 1:
				variant += " claim-attach" + servedBy(create, agentEvents)
			case hooked(create):
				variant += " claim-hook"
			default:
				variant += " plain"
			}
		default:
			continue
		}
		for i, name := range names {
			phasesOf(calls[i], children, agentEvents, func(phase string, d float64) { add(variant, name, phase, d) })
		}
	}
	keys := make([][3]string, 0, len(samples))
	for k := range samples {
		keys = append(keys, k)
	}
	callOrder := map[string]int{"create": 0, "start": 1, "delete": 2, "cleanup delete": 3}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		if a[1] != b[1] {
			return callOrder[a[1]] < callOrder[b[1]]
		}
		return median(samples[a]) < median(samples[b])
	})
	fmt.Printf("%-22s %-15s %-26s %4s %8s\n", "variant", "call", "event", "n", "p50 ms")
	for _, k := range keys {
		fmt.Printf("%-22s %-15s %-26s %4d %8.2f\n", k[0], k[1], k[2], len(samples[k]), median(samples[k]))
	}
}

// phasesOf reports the events of one runc call, in ms from the shim's fork.
func phasesOf(p *proc, children map[int][]*proc, agentEvents []event, report func(string, float64)) {
	t0 := p.fork
	report("exit (call done)", p.exit-t0)
	report("exec "+path.Base(p.execs[0].file), p.execs[0].t-t0)
	if len(p.execs) > 1 {
		report("exec "+path.Base(p.execs[1].file)+" (2nd)", p.execs[1].t-t0)
	}
	if path.Base(p.execs[0].file) != "lockbox-runtime" {
		return
	}
	// Events of lockbox-runtime itself: not of the runc it became.
	end := p.exit
	if len(p.execs) > 1 {
		end = p.execs[1].t
	}
	first := map[string]float64{}
	var lastRecv float64
	for _, e := range p.events {
		if e.t < p.execs[0].t || e.t > end {
			continue
		}
		if _, ok := first[e.name]; !ok {
			first[e.name] = e.t
		}
		if e.name == "syscalls:sys_exit_recvmsg" {
			lastRecv = e.t
		}
	}
	for ev, label := range map[string]string{
		"syscalls:sys_enter_connect": "connect",
		"syscalls:sys_enter_sendmsg": "send",
		"syscalls:sys_enter_execve":  "enter execve",
		"syscalls:sys_exit_wait4":    "wait4 return",
	} {
		if t, ok := first[ev]; ok {
			report(label, t-t0)
		}
	}
	if lastRecv > 0 {
		report("last recvmsg return", lastRecv-t0)
	}
	if send, ok := first["syscalls:sys_enter_sendmsg"]; ok {
		agentPhases(agentEvents, send, func(phase string, t float64) { report(phase, t-t0) })
	}
	for _, c := range children[p.pid] {
		if path.Base(c.execs[0].file) == "runc" && c.exit > 0 {
			report("fork runc child", c.fork-t0)
			report("runc child exit", c.exit-t0)
			break
		}
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

// servedBy names the agent that answered p's first request, when it is not
// the benchmark's own test agent.
func servedBy(p *proc, agentEvents []event) string {
	for _, e := range p.events {
		if e.name != "syscalls:sys_enter_sendmsg" {
			continue
		}
		i := sort.Search(len(agentEvents), func(i int) bool { return agentEvents[i].t >= e.t })
		for ; i < len(agentEvents); i++ {
			if a := agentEvents[i]; a.name == "syscalls:sys_exit_recvmsg" {
				if a.comm == "lockbox" {
					return " (real agent)"
				}
				return ""
			}
		}
	}
	return ""
}

// agentPhases reports, for the request sent at send, when the agent read
// it, the first of each mount syscall it made for it, and when it sent
// the reply.
func agentPhases(evs []event, send float64, report func(string, float64)) {
	i := sort.Search(len(evs), func(i int) bool { return evs[i].t >= send })
	read := -1.0
	seen := map[string]bool{}
	for ; i < len(evs); i++ {
		e := evs[i]
		if read < 0 {
			if e.name == "syscalls:sys_exit_recvmsg" {
				read = e.t
				report("agent: request read", e.t)
			}
			continue
		}
		label, ok := agentLabels[e.name]
		if !ok || seen[label] {
			continue
		}
		seen[label] = true
		report(label, e.t)
		if e.name == "syscalls:sys_enter_sendmsg" {
			return
		}
	}
}

var agentLabels = map[string]string{
	"syscalls:sys_enter_fsopen":    "agent: fsopen",
	"syscalls:sys_exit_fsmount":    "agent: fsmount return",
	"syscalls:sys_enter_open_tree": "agent: open_tree",
	"syscalls:sys_enter_setns":     "agent: setns",
	"syscalls:sys_exit_move_mount": "agent: move_mount return",
	"syscalls:sys_enter_sendmsg":   "agent: reply sent",
}
