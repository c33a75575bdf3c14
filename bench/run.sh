#!/usr/bin/env bash
# bench/run.sh SET... runs the named benchmark sets, each with the exact
# "go test" command docs/performance.md quotes, and prints the command,
# the commit and the machine before each. "make bench" runs the default
# sets; "make bench BENCH='fanout grpc'" the ones named; BENCH=all every
# set; BENCH=list lists them. See bench/README.md for what each prints and
# the baseline it is compared with.
#
# Environment: LOCKBOX_BIN (the built binaries; make bench sets it),
# LOCKBOX_TOOLS (containerd, for the containerd sets), GO, and the
# benchmarks' own LOCKBOX_BENCH_* knobs, passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
: "${LOCKBOX_BIN:=$PWD/bin}"
export LOCKBOX_BIN

# name|needs|package|go test flags  (needs: - nothing, root, bin, containerd)
sets=(
	"seal|-|./manager/keys|-bench BenchmarkSealRecord -count 5"
	"create|-|./manager/admin|-bench BenchmarkSecretCreate -benchtime 3000x -count 3"
	"fanout|-|./manager/dispatcher|-bench BenchmarkFanOut"
	"sessionmem|-|./manager/dispatcher|-bench BenchmarkSessionMemory -benchtime 1x -count 3"
	"mounter|root|./linux|-bench BenchmarkSetup|BenchmarkWipe -benchtime 3000x"
	"attach|root|./linux|-bench BenchmarkAttach"
	"update|root|./linux|-bench BenchmarkUpdate -benchtime 500x"
	"liveupdate|root|./bench|-bench BenchmarkLiveUpdate -benchtime 20x"
	"localapi|root|./agent|-bench BenchmarkLocalAPI"
	"hookpid|root|./agent|-bench BenchmarkHookContainerProcess"
	"agentmem|bin|./agent/daemon|-bench BenchmarkAgentRSS -benchtime 1x -count 3"
	"readclaim|-|./plugin/runtime/hotpath|-bench BenchmarkReadClaim"
	"shimopts|-|./plugin/shim|-bench BenchmarkRuncOptionsAny"
	"grpc|-|./manager|-bench BenchmarkGRPCStreams -benchtime 1x -count 2"
	"storm|-|./manager|-bench BenchmarkReconnectStorm -benchtime 1x -count 2"
	"liveagents|-|./manager|-bench BenchmarkLiveUpdateAgents -benchtime 1x"
	"containerd|containerd|./bench|-bench BenchmarkContainerLifecycle -benchtime 100x"
	"wrapperexec|containerd|./bench|-bench BenchmarkWrapperExec -benchtime 1000x"
	"shim|containerd|./bench|-bench BenchmarkShimLifecycle -benchtime 200x"
	"shimphases|containerd|./bench|-bench BenchmarkShimPhases -benchtime 100x"
)
# The default: a few minutes on 2 cores, nothing that starts containerd or
# thousands of TLS connections.
default="seal create fanout sessionmem mounter localapi agentmem readclaim"

want=${*:-$default}
if [ "$want" = list ]; then
	for s in "${sets[@]}"; do
		IFS='|' read -r name needs pkg _ <<<"$s"
		printf '%-12s %-11s %s\n' "$name" "$needs" "$pkg"
	done
	echo "default: $default"
	exit 0
fi
[ "$want" = all ] && want=$(for s in "${sets[@]}"; do echo "${s%%|*}"; done)

lookup() {
	for s in "${sets[@]}"; do
		[ "${s%%|*}" = "$1" ] && { echo "$s"; return; }
	done
	echo "bench: unknown set '$1' (BENCH=list lists them)" >&2
	exit 2
}

# Check every name before running any.
for name in $want; do lookup "$name" >/dev/null; done

failed=()
for name in $want; do
	IFS='|' read -r _ needs pkg flags <<<"$(lookup "$name")"
	case $needs in
	root | containerd)
		if [ "$(id -u)" != 0 ]; then
			echo "== $name: skipped: needs root (mount namespaces, tmpfs mounts)"
			continue
		fi ;;
	esac
	# The -bench regexp is one word: split the flags on spaces after it.
	read -r -a args <<<"$flags"
	# Quoted (printf %q) so that the line can be pasted into a shell.
	echo "== $name: $GO test -v -run '^\$' $(printf '%q ' "${args[@]}")$pkg"
	echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)'), $($GO version | cut -d' ' -f3), $(nproc) CPUs, loadavg $(cat /proc/loadavg)"
	start=$SECONDS
	# -v: the testing package then prints a benchmark's name with its
	# result, so the lines benchmarks print (the machine, tables) stand on
	# their own and benchstat still reads every result line.
	if ! $GO test -v -run '^$' "${args[@]}" -timeout 60m "$pkg"; then
		failed+=("$name")
	fi
	echo "== $name: $((SECONDS - start)) s, loadavg $(cat /proc/loadavg)"
done
if [ "${#failed[@]}" -gt 0 ]; then
	echo "bench: failed: ${failed[*]}" >&2
	exit 1
fi
