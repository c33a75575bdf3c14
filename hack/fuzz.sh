#!/usr/bin/env bash
# fuzz.sh: run every Go fuzz target that builds on this OS for FUZZTIME each
# (make fuzz). Targets are found with "go test -list", so a new Fuzz function
# is fuzzed without editing this file. Prints the inputs each target tried
# and a total.
#
# A real finding fails the run: Go writes the failing input under
# testdata/fuzz/<target>/ and says so. A bare "context deadline exceeded" at
# the end of the -fuzztime window with nothing written is Go's coordinator
# racing its own deadline (golang/go#51484, #75804) on a loaded machine: that
# target is rerun once; if it races again, its seed corpus is replayed as a
# plain test and the run goes on, counting it as "raced".
set -uo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
start=$(date +%s)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# A package whose tests do not build would otherwise just drop out of the list.
if ! $GO test -list '^Fuzz' ./... >"$out" 2>&1; then
	cat "$out"
	echo "fuzz.sh: go test -list failed" >&2
	exit 1
fi
targets=$(awk '/^Fuzz/ {f[++k] = $1; next} /^ok/ {for (i = 1; i <= k; i++) print $2 "@" f[i]; k = 0}' "$out")
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

# deadline_race: the run failed only because the fuzzing deadline raced.
deadline_race() {
	grep -q 'context deadline exceeded' "$out" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$out"
}

n=0 total=0 raced=0
for t in $targets; do
	pkg=${t%@*} fn=${t#*@}
	ok=
	for attempt in 1 2; do
		if $GO test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" "$pkg" >"$out" 2>&1; then
			ok=1
			break
		fi
		if ! deadline_race; then
			cat "$out"
			echo "fuzz.sh: $pkg $fn failed" >&2
			exit 1
		fi
	done
	execs=$(grep -o 'execs: [0-9]*' "$out" | tail -n 1 | cut -d' ' -f2)
	execs=${execs:-0}
	if [ -z "$ok" ]; then
		if ! $GO test -count=1 -run "^${fn}\$" "$pkg" >"$out" 2>&1; then
			cat "$out"
			echo "fuzz.sh: $pkg $fn: seed corpus fails" >&2
			exit 1
		fi
		raced=$((raced + 1))
		echo "fuzz $pkg $fn: $execs inputs in $FUZZTIME (the fuzzing deadline raced twice, nothing found; seeds pass)"
	else
		echo "fuzz $pkg $fn: $execs inputs in $FUZZTIME"
	fi
	n=$((n + 1)) total=$((total + execs))
done
echo "make fuzz: $n targets, $total inputs, FUZZTIME=$FUZZTIME each, $raced raced the deadline twice, $(($(date +%s) - start)) s in all"
