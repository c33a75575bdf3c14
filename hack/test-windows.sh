#!/usr/bin/env bash
# Runs the Windows tests of ./mounter, ./windows, ./plugin/shimproxy,
# ./agent (its platform-neutral tests and the live update of a Windows
# container through the real Windows mounter), ./agent/daemon and
# ./agent/localapi (its wire format; not its pipes) under wine, on Linux.
#
# It builds the test binaries with GOOS=windows and runs them with Debian's
# wine64 (8.0) in a throwaway wine prefix. Tests that wine cannot run are
# skipped by name below, each with the reason; they run on real Windows
# (`go test ./mounter/ ./windows/ ./plugin/shimproxy/`).
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
WINE=/usr/lib/wine/wine64         # Debian installs the loader here, not on PATH
WINESERVER=/usr/lib/wine/wineserver64

# Wine cannot do these; everything else in the packages runs.
skip=(
	# Wine keeps no security descriptors on files: GetNamedSecurityInfo
	# returns a DACL made up from the Unix mode (SYSTEM, the user, Everyone),
	# never protected, whatever SetNamedSecurityInfo/CreateDirectory set.
	TestBuildACL
	TestNewRepairsRootACL
	TestUpdateACL
	# Wine keeps only some file attributes: FILE_ATTRIBUTE_TEMPORARY and
	# FILE_ATTRIBUTE_NOT_CONTENT_INDEXED read back as 0x20 (ARCHIVE).
	TestBuildSetsFileAttributes
	TestUpdateSetsFileAttributes
	# Wine 8.0's CreateSymbolicLinkW returns success and creates nothing.
	TestAttachLinks
	# Wine's powershell.exe is a stub that prints nothing; there is no WMI
	# BitLocker provider.
	TestBitLockerProtected
	# agent/localapi's named-pipe tests: go-winio's overlapped reads on a
	# pipe never complete under wine 8.0 (the first one hangs until the
	# test binary's timeout), and wine lets a second server open a pipe
	# name already served. The wire format's tests run.
	TestPipeRoundTrip
	TestPipeRefusals
	TestPipeOversizedMessage
	TestPipeConcurrentClients
	TestPipeCloseEndsConnections
	TestPipeNoReplyReleaseGetsNoAnswer
	TestListenTwiceFails
)

need=()
[ -x "$WINE" ] || need+=(wine64)
command -v x86_64-w64-mingw32-ld >/dev/null || need+=(binutils-mingw-w64-x86-64)
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

work=$(mktemp -d)
export WINEPREFIX=$work/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
	"$WINESERVER" -k 2>/dev/null || true # this prefix's server only
	rm -rf "$work"
}
trap cleanup EXIT

pkgs=(mounter windows plugin/shimproxy agent agent/daemon agent/localapi)
for pkg in "${pkgs[@]}"; do
	GOOS=windows GOARCH=amd64 "$GO" test -c -o "$work/${pkg//\//_}.test.exe" "./$pkg/"
done

"$WINE" wineboot --init >/dev/null 2>&1
"$WINESERVER" -w

# Go (since 1.22) draws randomness from ProcessPrng in bcryptprimitives.dll,
# which wine 8.0 lacks: the runtime dies with "bcryptprimitives.dll not
# found". Give it a DLL whose one export forwards ProcessPrng to advapi32's
# RtlGenRandom (SystemFunction036), which has the same arguments and also
# returns non-zero on success.
sys32=$WINEPREFIX/drive_c/windows/system32
if [ ! -e "$sys32/bcryptprimitives.dll" ]; then
	printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\n  ProcessPrng = advapi32.SystemFunction036\n' >"$work/bcp.def"
	x86_64-w64-mingw32-as -o "$work/empty.o" </dev/null
	x86_64-w64-mingw32-ld -shared -e 0 -o "$sys32/bcryptprimitives.dll" "$work/empty.o" "$work/bcp.def"
fi

skipRE="^($(
	IFS='|'
	echo "${skip[*]}"
))\$"
status=0
for pkg in "${pkgs[@]}"; do
	echo "== wine: ./$pkg (skipped: ${skip[*]})"
	(cd "$pkg" && "$WINE" "$work/${pkg//\//_}.test.exe" -test.count=1 -test.skip "$skipRE" "$@") || status=1
done
exit $status
