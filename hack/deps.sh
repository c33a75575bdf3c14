#!/usr/bin/env bash
# Installs everything Lockbox's build, tests and demo need on a fresh Debian
# machine: Debian packages with apt-get, and Go tools built from the module
# proxy into $LOCKBOX_TOOLS/bin. Idempotent: a second run installs nothing.
set -euo pipefail

LOCKBOX_TOOLS=${LOCKBOX_TOOLS:-/opt/lockbox/tools}
CONTAINERD_VERSION=v2.4.2
STATICCHECK_VERSION=v0.8.2
CRICTL_VERSION=v1.37.0
PROTOC_GEN_GO_VERSION=v1.36.11
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0
# etcdctl and etcdutl for the backup and restore in docs/operations.md: the
# release of the etcd the managers embed (go.mod).
ETCD_VERSION=v3.7.3

packages=(runc crun busybox-static protobuf-compiler libprotobuf-dev containerd iproute2 util-linux wine64 binutils-mingw-w64-x86-64)
# systemd-analyze verify checks contrib/systemd (it needs no running systemd).
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "deps: apt-get install ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's containerd package starts a system containerd; tests run their own.
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now containerd >/dev/null 2>&1 || true
fi

bin=$LOCKBOX_TOOLS/bin
mkdir -p "$bin"
install_go() { # name module@version [VAR=value ...: the build's environment]
	local name=$1 mod=$2
	shift 2
	local want="$mod${*:+ $*}"
	if [ -x "$bin/$name" ] && [ -f "$bin/.$name.version" ] && [ "$(cat "$bin/.$name.version")" = "$want" ]; then
		return
	fi
	echo "deps: $* go install $mod"
	env "$@" GOBIN="$bin" GOFLAGS=-buildvcs=false go install "$mod"
	echo "$want" >"$bin/.$name.version"
}
install_go containerd github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION
install_go ctr github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION
# Static, as containerd's releases build it (SHIM_CGO_ENABLED ?= 0): the
# baseline of the shim benchmarks, whose Lockbox shim is built the same way.
install_go containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION CGO_ENABLED=0
install_go crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION
install_go staticcheck honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION
install_go protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION
install_go protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION
# etcd's tools: their go.mod files hold replace directives, so go install
# refuses them; a throwaway module that requires them builds them.
install_etcd_tools() {
	if [ -x "$bin/etcdctl" ] && [ -x "$bin/etcdutl" ] && [ "$(cat "$bin/.etcd-tools.version" 2>/dev/null)" = "$ETCD_VERSION" ]; then
		return
	fi
	echo "deps: build etcdctl and etcdutl $ETCD_VERSION"
	local d
	d=$(mktemp -d)
	(
		cd "$d"
		export GOFLAGS=-buildvcs=false
		go mod init lockbox.tools/etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdutl/v3@$ETCD_VERSION" >/dev/null 2>&1
		go build -o "$bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
		go build -o "$bin/etcdutl" go.etcd.io/etcd/etcdutl/v3
	)
	rm -rf "$d"
	echo "$ETCD_VERSION" >"$bin/.etcd-tools.version"
}
install_etcd_tools
echo "deps: ready ($bin)"
