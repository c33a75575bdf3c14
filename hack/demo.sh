#!/usr/bin/env bash
# Lockbox demo: an embedded manager, an agent and containerd 2.4.2, all in a
# temp dir; a secret and a service; a busybox container that reads its secret
# through Lockbox's runtime shim (runtime type io.containerd.lockbox.v2,
# bin/containerd-shim-lockbox-v2, which containerd finds on its PATH); then
# the container stops and its tmpfs is gone. (lockbox-runtime, the runc
# wrapper, is the way in on containerd 1.6/1.7: docs/containerd.md.)
# Run by `make demo` (after hack/deps.sh and the build). Cleans up on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/bin
tools=${LOCKBOX_TOOLS:-/opt/lockbox/tools}/bin
for b in "$bin/lockbox" "$bin/node/lockbox" "$bin/containerd-shim-lockbox-v2" "$tools/containerd" "$tools/ctr" "$(command -v runc || echo /usr/sbin/runc)" /bin/busybox; do
	[ -x "$b" ] || { echo "demo: $b is missing: run 'make deps build'" >&2; exit 1; }
done

work=$(mktemp -d /tmp/lockbox-demo.XXXXXX)
chmod 0711 "$work"
pids=()
# containerd 2.x's ctr warns about cgroup v1 on every call; keep the demo readable.
ctr_() { "$tools/ctr" --address "$work/containerd.sock" "$@" 2> >(grep -v 'DEPRECATION: The support for cgroup v1' >&2); }
lockbox() { "$bin/lockbox" -H "unix://$work/manager.sock" "$@"; }

cleanup() {
	set +e
	if [ -S "$work/containerd.sock" ]; then
		ctr_ tasks kill -s SIGKILL demo >/dev/null 2>&1
		ctr_ tasks delete demo >/dev/null 2>&1
		ctr_ containers delete demo >/dev/null 2>&1
	fi
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null && wait "${pids[i]}" 2>/dev/null
	done
	# Shims outlive containerd; end the ones serving this demo.
	for p in $(pgrep -f "containerd-shim-(lockbox|runc)-v2 .*-address $work/containerd.sock" || true); do
		kill -9 "$p" 2>/dev/null
	done
	findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }
wait_for() { # description command...
	local what=$1 out; shift
	for _ in $(seq 1 ${DEMO_TRIES:-400}); do
		out=$("$@" 2>&1) && return 0
		sleep 0.05
	done
	echo "demo: timed out waiting for $what: $out" >&2
	tail -n 20 "$work"/*.log >&2
	return 1
}

# A free loopback port for the manager, and the next one for its etcd peer.
while :; do
	port=$((20000 + RANDOM % 20000))
	ss -Hltn "( sport = :$port or sport = :$((port + 1)) )" | grep -q . || break
done

step "Start a manager (embedded etcd) in $work"
"$bin/lockbox" manager --data-dir "$work/manager" --listen "127.0.0.1:$port" --admin-socket "$work/manager.sock" >"$work/manager.log" 2>&1 &
pids+=($!)
wait_for "the manager" lockbox secret ls -q

step "Create a secret and a service that uses it"
show "printf 'correct horse battery staple' | lockbox secret create db_password -"
printf 'correct horse battery staple' | lockbox secret create db_password -
show "printf 'tok-12345' | lockbox secret create api_token -"
printf 'tok-12345' | lockbox secret create api_token -
show "lockbox service create web --secret source=db_password --secret source=api_token,target=api/token,uid=1000,gid=1000,mode=0400"
lockbox service create web --secret source=db_password --secret source=api_token,target=api/token,uid=1000,gid=1000,mode=0400
lockbox secret ls
lockbox service ls

step "Start an agent on this node, joined with a worker token"
# The token goes in on stdin, never on the daemon's command line. The agent
# is lockbox's node build (bin/node/lockbox): the agent alone, which is what
# a node runs; the full lockbox runs it the same way.
lockbox join-token worker -q | "$bin/node/lockbox" agent --manager "127.0.0.1:$port" --token-file - --state-dir "$work/agent" --socket "$work/agent/agent.sock" >"$work/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent socket" test -S "$work/agent/agent.sock"

step "Start containerd with its own root, state and socket"
cat >"$work/containerd.toml" <<TOML
version = 3
root = "$work/containerd/root"
state = "$work/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
TOML
# containerd runs the shim of runtime type io.containerd.lockbox.v2 as
# containerd-shim-lockbox-v2 from its PATH; the shim finds the agent at
# LOCKBOX_AGENT_SOCKET (default /run/lockbox/agent.sock).
show "PATH=$bin:\$PATH LOCKBOX_AGENT_SOCKET=$work/agent/agent.sock containerd --config $work/containerd.toml"
PATH=$bin:$tools:$PATH LOCKBOX_AGENT_SOCKET=$work/agent/agent.sock \
	"$tools/containerd" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
wait_for "containerd" ctr_ version

step "Build a busybox root filesystem (no registry needed)"
mkdir -p "$work/rootfs/bin" "$work/rootfs/proc" "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/run" "$work/rootfs/tmp" "$work/rootfs/etc"
cp /bin/busybox "$work/rootfs/bin/"
chroot "$work/rootfs" /bin/busybox --install -s /bin
echo "root:x:0:0:root:/root:/bin/sh" >"$work/rootfs/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\n' >"$work/rootfs/etc/group"

step "Run a container that claims the service web (runtime io.containerd.lockbox.v2)"
run=(--runtime io.containerd.lockbox.v2 --fifo-dir "$work/fifo" --env PATH=/bin --annotation lockbox.service=web)
show "ctr run -d --runtime io.containerd.lockbox.v2 --annotation lockbox.service=web --rootfs ROOTFS demo sleep 600"
# The agent receives its grants from the manager just after it joins.
start_demo() {
	ctr_ run -d "${run[@]}" --rootfs "$work/rootfs" demo sleep 600 && return 0
	ctr_ containers delete demo
	return 1
}
wait_for "the agent's grants" start_demo
show "ctr tasks exec demo ls -l /run/secrets /run/secrets/api"
ctr_ tasks exec --exec-id ls --fifo-dir "$work/fifo" demo ls -l /run/secrets /run/secrets/api
show "ctr tasks exec demo cat /run/secrets/db_password"
ctr_ tasks exec --exec-id cat --fifo-dir "$work/fifo" demo cat /run/secrets/db_password
echo
pid=$(ctr_ tasks ls | awk '$1 == "demo" {print $2}')
show "findmnt -N $pid   # inside the container's mount namespace: one read-only file mount per secret"
findmnt -N "$pid" -l -o TARGET,FSTYPE,OPTIONS | awk 'NR == 1 || $1 ~ "^/run/secrets/"'
show "lockbox agent ls   # what the agent holds"
"$bin/lockbox" agent ls --socket "$work/agent/agent.sock"
show "findmnt /run/secrets   # the host never sees it"
findmnt -rn -o TARGET | grep secrets || echo "(no secrets mount on the host)"

step "A container that claims nothing sees nothing (the shim by its absolute path)"
show "ctr run --rm --runtime $bin/containerd-shim-lockbox-v2 ... plain ls /run/secrets"
ctr_ run --rm --runtime "$bin/containerd-shim-lockbox-v2" --fifo-dir "$work/fifo" --env PATH=/bin --rootfs "$work/rootfs" plain sh -c 'ls /run/secrets 2>&1; true'

step "A container that claims a service this node has no grant for does not start"
show "ctr run --rm --runtime io.containerd.lockbox.v2 --annotation lockbox.service=payments ... denied true"
if ctr_ run --rm --runtime io.containerd.lockbox.v2 --fifo-dir "$work/fifo" --env PATH=/bin --annotation lockbox.service=payments --rootfs "$work/rootfs" denied true; then
	echo "demo: FAIL: a container claiming an ungranted service started" >&2
	exit 1
fi
ctr_ containers delete denied >/dev/null 2>&1 || true
echo "(refused, and the error names the service)"

step "Stop and delete the container: the agent wipes and frees the tmpfs"
ctr_ tasks kill -s SIGKILL demo
wait_for "the container to stop" ctr_ tasks delete demo
ctr_ containers delete demo
show "findmnt -N $pid /run/secrets"
findmnt -N "$pid" /run/secrets 2>&1 || echo "(the container's mount namespace is gone)"
if grep -q "correct horse\|tok-12345" "$work"/*.log; then
	echo "demo: FAIL: a secret appears in a log" >&2
	exit 1
fi
show "lockbox agent ls   # nothing held: the tmpfs was overwritten and freed"
"$bin/lockbox" agent ls --socket "$work/agent/agent.sock"
echo "(no secret bytes in any daemon log)"

step "Done; cleaning up $work"
