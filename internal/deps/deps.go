// Package deps pins the project's chosen dependencies while the packages
// that use them are being written. It is removed once every one is imported
// by real code.
package deps

import (
	_ "github.com/containerd/containerd/v2/client"
	_ "github.com/containerd/nri/pkg/stub"
	_ "github.com/cyphar/filepath-securejoin"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "golang.org/x/crypto/nacl/secretbox"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
	_ "k8s.io/cri-api/pkg/apis/runtime/v1"
)
