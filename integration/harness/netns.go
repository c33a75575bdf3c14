//go:build linux

package harness

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// NetnsPair is two network namespaces joined by one veth pair, with a /30
// between them: a link that a test can cut and restore, with no address or
// route added to the host's own namespace.
type NetnsPair struct {
	// A and B are the namespaces' names (under /run/netns).
	A, B string
	// IPA and IPB are the addresses of A's and B's veth ends.
	IPA, IPB string
	// VethA and VethB are the veth ends' names in A and B.
	VethA, VethB string
}

// NewNetnsPair creates the namespaces lbx-<tag>-a and lbx-<tag>-b, joined
// by a veth pair addressed 10.254.<subnet>.1/30 (in A) and .2/30 (in B),
// each with its loopback up; they are deleted when the test ends (which
// also deletes the veth pair). subnet keeps tests that run at once apart.
func NewNetnsPair(t testing.TB, tag string, subnet int) *NetnsPair {
	t.Helper()
	n := &NetnsPair{
		A: "lbx-" + tag + "-a", B: "lbx-" + tag + "-b",
		IPA: fmt.Sprintf("10.254.%d.1", subnet), IPB: fmt.Sprintf("10.254.%d.2", subnet),
		// Interface names are limited to 15 bytes; each end lives in its
		// own namespace, so the names need only differ from each other
		// while both are still in the host's namespace.
		VethA: "lbxva" + fmt.Sprint(subnet), VethB: "lbxvb" + fmt.Sprint(subnet),
	}
	// Left behind by a crashed run: remove, or the add fails.
	for _, ns := range []string{n.A, n.B} {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	t.Cleanup(func() {
		for _, ns := range []string{n.A, n.B} {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		}
	})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", n.A)
	run("netns", "add", n.B)
	run("link", "add", n.VethA, "netns", n.A, "type", "veth", "peer", "name", n.VethB, "netns", n.B)
	for _, end := range []struct{ ns, dev, ip string }{{n.A, n.VethA, n.IPA}, {n.B, n.VethB, n.IPB}} {
		run("-n", end.ns, "link", "set", "lo", "up")
		run("-n", end.ns, "addr", "add", end.ip+"/30", "dev", end.dev)
		run("-n", end.ns, "link", "set", end.dev, "up")
	}
	return n
}

// NetnsExec is a StartProcPrefix prefix that runs a command in network
// namespace ns and nothing else: unlike "ip netns exec", nsenter --net
// keeps the host's mount namespace, where the agent's mounts must be.
func NetnsExec(ns string) []string {
	return []string{"nsenter", "--net=/run/netns/" + ns, "--"}
}

// Cut takes both veth ends down: nothing passes between A and B until
// Restore. Established TCP connections are not told; they see silence.
func (n *NetnsPair) Cut(t testing.TB) {
	t.Helper()
	n.setLinks(t, "down")
}

// Restore brings both veth ends up again.
func (n *NetnsPair) Restore(t testing.TB) {
	t.Helper()
	n.setLinks(t, "up")
}

func (n *NetnsPair) setLinks(t testing.TB, state string) {
	t.Helper()
	for _, end := range [][2]string{{n.A, n.VethA}, {n.B, n.VethB}} {
		if out, err := exec.Command("ip", "-n", end[0], "link", "set", end[1], state).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s link set %s %s: %v: %s", end[0], end[1], state, err, out)
		}
	}
}
