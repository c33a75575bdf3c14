//go:build linux

package main

import (
	"os"
	"os/exec"
	"slices"
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

// leaves are the api packages the hot path may link: the claim contract
// and the validation limits, which import only the standard library (the
// test below keeps them so).
var leaves = []string{
	"github.com/lockbox-project/lockbox/api/claim",
	"github.com/lockbox-project/lockbox/api/validation",
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
		if slices.Contains(leaves, pkg) {
			continue
		}
		for _, h := range heavy {
			if strings.HasPrefix(pkg, h) {
				t.Errorf("lockbox-runtime links %s", pkg)
			}
		}
	}
}

func TestLeavesImportOnlyTheStandardLibrary(t *testing.T) {
	for _, leaf := range leaves {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", leaf).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", leaf, err)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if pkg != leaf {
				t.Errorf("%s imports %s: it must import only the standard library", leaf, pkg)
			}
		}
	}
}

// TestMountersLinkNoContainerd: the mounters run in the agent; the
// containerd client packages belong to plugin/ocispec (issue 11).
func TestMountersLinkNoContainerd(t *testing.T) {
	for _, goos := range []string{"linux", "windows"} {
		cmd := exec.Command("go", "list", "-deps", "../../linux", "../../windows", "../../mounter")
		cmd.Env = append(os.Environ(), "GOOS="+goos)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list (GOOS=%s): %v", goos, err)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if strings.HasPrefix(pkg, "github.com/containerd/") {
				t.Errorf("GOOS=%s: the mounters link %s", goos, pkg)
			}
		}
	}
}
