//go:build linux

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// lockbox-runtime runs once per runc call of every container: every
// package it links runs its init on each of those calls. These are the
// ones it must never link again (docs/containerd.md, "Cost").
var heavy = []string{
	"google.golang.org/protobuf/",
	"google.golang.org/grpc",
	"go.etcd.io/",
	"github.com/opencontainers/runtime-spec/",
	"github.com/lockbox-project/lockbox/api/",
	"github.com/lockbox-project/lockbox/agent/",
	"github.com/lockbox-project/lockbox/manager/",
	"github.com/lockbox-project/lockbox/plugin/nri",
}

func TestBinaryLinksNoHeavyPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "net" || strings.HasPrefix(pkg, "net/") {
			t.Errorf("lockbox-runtime links %s", pkg)
		}
		for _, h := range heavy {
			if strings.HasPrefix(pkg, h) {
				t.Errorf("lockbox-runtime links %s", pkg)
			}
		}
	}
}
