//go:build integration && linux

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/integration/harness"
)

// Claim rules (issue 13) through the real control plane: the services'
// rules go from "lockbox service create --claim" on a real manager to a
// real agent, which decides every claim on the facts the adapter reports.

// claimScript prints STARTED first: a refused container must not print it.
// The secret is read into the shell before it is printed: busybox cat
// sendfile()s the tmpfs's pages into the output pipe, and the agent's wipe
// when the container exits overwrites them in place, before containerd has
// drained the pipe (the output then shows zeros).
const claimScript = `echo STARTED; v=$(cat /run/secrets/db_pw); echo "$v"`

// claimSetup starts a manager with one secret and six services: pay
// (pods of namespace payments), paylabel (pods of payments labelled
// team=pay), payimg and paynginx (pods of payments running busybox, nginx),
// prod (containers of containerd namespace prod) and open (no rules).
func claimSetup(t *testing.T, bin string) *harness.Manager {
	m := harness.StartManager(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.CLIStdin(ctx, []byte("hunter2-db"), "secret", "create", "db_pw", "-"); err != nil {
		t.Fatal(err)
	}
	for _, svc := range [][]string{
		{"pay", "--claim", "k8s.namespace==payments"},
		{"paylabel", "--claim", "k8s.namespace==payments", "--claim", "k8s.pod.label.team==pay"},
		{"payimg", "--claim", "k8s.namespace==payments", "--claim", "container.image==docker.io/library/busybox"},
		{"paynginx", "--claim", "k8s.namespace==payments", "--claim", "container.image==docker.io/library/nginx"},
		{"prod", "--claim", "containerd.namespace==prod"},
		{"open"},
	} {
		args := append([]string{"service", "create", svc[0], "--secret", "source=db_pw"}, svc[1:]...)
		if _, err := m.CLI(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// startClaimAgent starts an agent with its metrics on a free loopback
// port, and returns the metrics address.
func startClaimAgent(t *testing.T, bin string, m *harness.Manager, extra ...string) (*harness.Agent, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := harness.StartAgent(t, bin, m, append([]string{"--metrics-addr", addr}, extra...)...)
	return a, addr
}

// checkRefused: err is a refusal naming the service and holding every
// part of want; the container printed nothing; the agent holds nothing.
func checkRefused(ctx context.Context, t *testing.T, a *harness.Agent, err error, out, service string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("claim of %s admitted, want refused: %s", service, out)
	}
	// crictl quotes the runtime's error again.
	msg := strings.ReplaceAll(err.Error(), `\"`, `"`)
	for _, w := range append([]string{`may not claim service "` + service + `"`}, want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("refusal lacks %q: %s", w, msg)
		}
	}
	if strings.Contains(out, "STARTED") || strings.Contains(msg, "hunter2-db") {
		t.Errorf("refused container ran or leaked: %q / %s", out, msg)
	}
	if held, err := a.List(ctx); err != nil || len(held) != 0 {
		t.Errorf("agent holds %v (%v) after a refusal", held, err)
	}
}

// checkAudit: the agent logged refusals of service at warn with the rule,
// and never the secret's bytes; its metrics count them.
func checkAudit(t *testing.T, a *harness.Agent, metricsAddr string, service, rule string) {
	t.Helper()
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `msg="claim refused"`) && strings.Contains(l, "service="+service+" ") && (strings.Contains(l, "rule="+rule+" ") || strings.Contains(l, `rule="`+rule+`"`)) {
			found = found || strings.Contains(l, "level=WARN")
		}
	}
	if !found {
		t.Errorf("agent log has no warn line refusing %s by %s:\n%s", service, rule, b)
	}
	if strings.Contains(string(b), "hunter2-db") {
		t.Errorf("agent log holds the secret's bytes")
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := `lockbox_agent_claims_refused_total{service="` + service + `"} `
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 1 {
				return
			}
		}
	}
	t.Errorf("metrics count no refusal of %s:\n%s", service, body)
}

// criClaim creates and starts a container claiming service in pod, and
// returns its output once it exits, or the error of the create or start
// that failed (then checking the container is not running); the container
// is removed either way.
func criClaim(ctx context.Context, t *testing.T, k *harness.Crictl, pod *harness.CrictlPod, name, service string, annotations map[string]string) (string, error) {
	t.Helper()
	ann := map[string]string{"lockbox.service": service}
	for k, v := range annotations {
		ann[k] = v
	}
	id, err := k.Create(ctx, pod, harness.CrictlContainer{Name: name, Image: busybox, Command: []string{"sh", "-c", claimScript}, Annotations: ann})
	if err != nil {
		return "", err
	}
	defer func() {
		k.Run(context.WithoutCancel(ctx), "stop", id)
		k.Run(context.WithoutCancel(ctx), "rm", id)
	}()
	if _, err := k.Run(ctx, "start", id); err != nil {
		if st, ierr := k.Inspect(ctx, id); ierr == nil && st.State == "CONTAINER_RUNNING" {
			t.Errorf("container %s runs after its start failed", id)
		}
		return "", err
	}
	code, err := k.WaitExited(ctx, id)
	if err != nil {
		return "", err
	}
	out, err := k.Logs(ctx, id)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit %d: %s", code, out)
	}
	return out, err
}

// forgedNamespace is the annotation a pod in dev sets to pass for payments.
var forgedNamespace = map[string]string{"io.kubernetes.cri.sandbox-namespace": "payments"}

// CRI through crictl, for the runtime shim and the runc wrapper as
// runtime handlers: pods in payments are admitted by
// k8s.namespace==payments, pods in dev refused naming the rule, a pod
// claiming a service without rules refused by the secure default, a label
// rule refused (these adapters cannot see labels), and a dev pod that
// annotates itself into payments refused under a handler that passes
// every annotation ("*") into the spec: CRI's own annotation, set after
// the pass-through, overwrites the forgery (shown in the bundle's spec).
func TestClaimRulesCRI(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	runtimeBin := filepath.Join(bin, "lockbox-runtime")
	m := claimSetup(t, bin)
	a, metrics := startClaimAgent(t, bin, m)
	const r = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes."
	all := r + "shim-all]\n  runtime_type = 'io.containerd.lockbox.v2'\n  pod_annotations = ['*']\n  container_annotations = ['*']\n" +
		r + "wrapper-all]\n  runtime_type = 'io.containerd.runc.v2'\n  pod_annotations = ['*']\n  container_annotations = ['*']\n" +
		r + "wrapper-all.options]\n  BinaryName = " + strconv.Quote(runtimeBin) + "\n"
	c := harness.StartContainerd(t, harness.Options{CRI: true, ShimHandler: "lockbox-shim", RuntimeBinary: runtimeBin, ShimDir: bin,
		ExtraConfig: all, Env: []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	k := c.Crictl()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	for _, h := range []struct{ name, all string }{{"lockbox-shim", "shim-all"}, {"lockbox", "wrapper-all"}} {
		t.Run(h.name, func(t *testing.T) {
			pay, err := k.RunPodWith(ctx, h.name+"-pay", h.name, harness.PodOptions{Namespace: "payments", Labels: map[string]string{"team": "pay"}})
			if err != nil {
				t.Fatal(err)
			}
			dev, err := k.RunPodWith(ctx, h.name+"-dev", h.name, harness.PodOptions{Namespace: "dev"})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			a.WaitUntil(t, "the pay service's grants", func() error {
				n++
				out, err := criClaim(ctx, t, k, pay, fmt.Sprintf("admitted%d", n), "pay", nil)
				if err == nil && !strings.Contains(out, "STARTED\nhunter2-db\n") {
					err = fmt.Errorf("admitted container's output %q", out)
				}
				return err
			})

			out, err := criClaim(ctx, t, k, dev, "refused", "pay", nil)
			checkRefused(ctx, t, a, err, out, "pay", `claim rule k8s.namespace==payments does not hold: the pod's namespace is "dev"`)
			out, err = criClaim(ctx, t, k, pay, "default", "open", nil)
			checkRefused(ctx, t, a, err, out, "open", "refused by the default rule", `a Kubernetes pod (namespace "payments")`)
			out, err = criClaim(ctx, t, k, pay, "labels", "paylabel", nil)
			checkRefused(ctx, t, a, err, out, "paylabel", "claim rule k8s.pod.label.team==pay does not hold", "did not report the pod's labels")
			checkImageRules(ctx, t, a, k, pay)

			forged, err := k.RunPodWith(ctx, h.name+"-forged", h.all, harness.PodOptions{Namespace: "dev", Annotations: forgedNamespace})
			if err != nil {
				t.Fatal(err)
			}
			// A container that claims nothing shows what reaches the spec:
			// the pod's and the container's forgery passed through, then
			// overwritten by CRI.
			// The probe shows the handler passes annotations through:
			// containerd matches the lists with path.Match, where "*"
			// matches any key without a '/', as CRI's own keys are.
			probe := map[string]string{"io.kubernetes.cri.sandbox-namespace": "payments", "lockbox.test.probe": "passed"}
			id, err := k.Create(ctx, forged, harness.CrictlContainer{Name: "spec", Image: busybox, Command: []string{"sleep", "600"}, Annotations: probe})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.Run(ctx, "start", id); err != nil {
				t.Fatal(err)
			}
			if got := specAnnotation(t, c, id, "lockbox.test.probe"); got != "passed" {
				t.Errorf("handler %s passed no annotation through (probe %q): the forgery was not tried", h.all, got)
			}
			if got := specAnnotation(t, c, id, "io.kubernetes.cri.sandbox-namespace"); got != "dev" {
				t.Errorf("spec of a dev pod annotated into payments says namespace %q, want CRI's dev", got)
			}
			k.Run(ctx, "stop", id)
			k.Run(ctx, "rm", id)
			out, err = criClaim(ctx, t, k, forged, "forged", "pay", forgedNamespace)
			checkRefused(ctx, t, a, err, out, "pay", `the pod's namespace is "dev"`)
			for _, p := range []*harness.CrictlPod{pay, dev, forged} {
				if err := k.StopPod(ctx, p); err != nil {
					t.Error(err)
				}
			}
		})
	}
	checkAudit(t, a, metrics, "pay", "k8s.namespace==payments")
	checkAudit(t, a, metrics, "open", "default")
}

// checkImageRules: a payments pod running busybox (CRI's image name
// normalised, as containerd records it) may claim payimg and not paynginx.
func checkImageRules(ctx context.Context, t *testing.T, a *harness.Agent, k *harness.Crictl, pay *harness.CrictlPod) {
	t.Helper()
	out, err := criClaim(ctx, t, k, pay, "image", "payimg", nil)
	if err != nil || !strings.Contains(out, "STARTED\nhunter2-db\n") {
		t.Errorf("busybox pod claiming payimg: %v: %q", err, out)
	}
	out, err = criClaim(ctx, t, k, pay, "nginx", "paynginx", nil)
	checkRefused(ctx, t, a, err, out, "paynginx", `claim rule container.image==docker.io/library/nginx does not hold: the image is "`+busybox+`"`)
}

// specAnnotation reads an annotation of a running CRI container's OCI
// spec, from its bundle in containerd's state directory.
func specAnnotation(t *testing.T, c *harness.Containerd, id, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "k8s.io", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	return spec.Annotations[key]
}

// CRI through crictl with the agent's NRI plugin, which sees the pod as
// kubelet described it: namespace and labels from the sandbox, never from
// annotations. Admitted, refused, label rules admitted (NRI knows labels),
// the secure default, and a dev pod annotated into payments refused.
func TestClaimRulesNRI(t *testing.T) {
	bin := harness.LockboxBin(t)
	m := claimSetup(t, bin)
	c := harness.StartContainerd(t, harness.Options{CRI: true, NRI: true, NRIRequired: []string{"lockbox"}})
	c.Import("k8s.io", harness.ImageConfig{Name: busybox})
	k := c.Crictl()
	a, metrics := startClaimAgent(t, bin, m, "--nri", "--nri-socket", c.NRISocket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	pay, err := k.RunPodWith(ctx, "nri-pay", "", harness.PodOptions{Namespace: "payments", Labels: map[string]string{"team": "pay"}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := k.RunPodWith(ctx, "nri-dev", "", harness.PodOptions{Namespace: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	forged, err := k.RunPodWith(ctx, "nri-forged", "", harness.PodOptions{Namespace: "dev", Annotations: forgedNamespace})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	a.WaitUntil(t, "the agent's NRI plugin and the pay service's grants", func() error {
		n++
		out, err := criClaim(ctx, t, k, pay, fmt.Sprintf("admitted%d", n), "pay", nil)
		if err == nil && !strings.Contains(out, "STARTED\nhunter2-db\n") {
			err = fmt.Errorf("admitted container's output %q", out)
		}
		return err
	})
	out, err := criClaim(ctx, t, k, pay, "labelled", "paylabel", nil)
	if err != nil || !strings.Contains(out, "hunter2-db") {
		t.Errorf("pod labelled team=pay claiming paylabel: %v: %s", err, out)
	}
	checkImageRules(ctx, t, a, k, pay)
	out, err = criClaim(ctx, t, k, dev, "refused", "pay", nil)
	checkRefused(ctx, t, a, err, out, "pay", `claim rule k8s.namespace==payments does not hold: the pod's namespace is "dev"`)
	out, err = criClaim(ctx, t, k, forged, "forged", "pay", forgedNamespace)
	checkRefused(ctx, t, a, err, out, "pay", `claim rule k8s.namespace==payments does not hold: the pod's namespace is "dev"`)
	out, err = criClaim(ctx, t, k, pay, "default", "open", nil)
	checkRefused(ctx, t, a, err, out, "open", "refused by the default rule")
	checkAudit(t, a, metrics, "pay", "k8s.namespace==payments")
}

// ctr in two containerd namespaces, for the runc wrapper (attach and hook
// modes) and the runtime shim: prod admitted by containerd.namespace==prod,
// dev refused naming the rule, a service without rules claimable from dev
// (today's behaviour outside Kubernetes), and a pod's service refused to a
// ctr container.
func TestClaimRulesCtr(t *testing.T) {
	bin := harness.LockboxBin(t)
	if _, err := os.Stat(filepath.Join(bin, "containerd-shim-lockbox-v2")); err != nil {
		t.Fatalf("%v (make build)", err)
	}
	m := claimSetup(t, bin)
	a, metrics := startClaimAgent(t, bin, m)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, adapter := range []string{"wrapper-attach", "wrapper-hook", "shim"} {
		t.Run(adapter, func(t *testing.T) {
			env := []string{"LOCKBOX_AGENT_SOCKET=" + a.Socket}
			if adapter == "wrapper-hook" {
				env = append(env, "LOCKBOX_RUNTIME_MODE=hook", "LOCKBOX_HOOK_LOG="+filepath.Join(t.TempDir(), "hook.log"))
			}
			c := harness.StartContainerd(t, harness.Options{ShimDir: bin, Env: env})
			for _, ns := range []string{"prod", "dev"} {
				c.Import(ns, harness.ImageConfig{Name: busybox})
			}
			run := func(ns, id, service string) (string, error) {
				args := c.RunArgs(filepath.Join(bin, "lockbox-runtime"))
				if adapter == "shim" {
					args = c.ShimRunArgs(shimRuntime)
				}
				args = append(args, "--env", "PATH=/bin", "--annotation", "lockbox.service="+service, busybox, id, "sh", "-c", claimScript)
				out, err := c.Ctr(ctx, ns, args...)
				var ce *harness.CtrError
				if errors.As(err, &ce) {
					err = errors.New(ce.Stderr)
				}
				return out, err
			}
			n := 0
			a.WaitUntil(t, "the prod service's grants", func() error {
				n++
				out, err := run("prod", fmt.Sprintf("admitted%d", n), "prod")
				if err == nil && !strings.Contains(out, "STARTED\nhunter2-db\n") {
					err = fmt.Errorf("admitted container's output %q", out)
				}
				return err
			})
			out, err := run("dev", "refused", "prod")
			checkRefused(ctx, t, a, err, out, "prod", `claim rule containerd.namespace==prod does not hold: the containerd namespace is "dev"`)
			runcRoot := c.RuncRoot
			if adapter == "shim" {
				runcRoot = runcDefaultRoot
			}
			checkNoTrace(ctx, t, c, "dev", runcRoot, "refused")
			out, err = run("prod", "podsvc", "pay")
			checkRefused(ctx, t, a, err, out, "pay", "claim rule k8s.namespace==payments does not hold: the container is not in a Kubernetes pod")
			out, err = run("dev", "open", "open")
			if err != nil || !strings.Contains(out, "STARTED\nhunter2-db\n") {
				log, _ := os.ReadFile(a.LogPath)
				t.Errorf("ctr container claiming a service without rules: %v: %q\nagent log:\n%s", err, out, log)
			}
			if held, err := a.ListReleased(ctx); err != nil || len(held) != 0 {
				t.Errorf("agent holds %v (%v) after every container was removed", held, err)
			}
		})
	}
	checkAudit(t, a, metrics, "prod", "containerd.namespace==prod")
}
