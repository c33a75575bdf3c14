package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads the agent's /metrics as Prometheus would.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// metric is the value of name's sample whose labels include the pairs
// given (a histogram's count); -1 if there is none.
func metric(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
next:
	for _, m := range mfs[name].GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range m.GetLabel() {
				ok = ok || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

func TestMetricsEndpoint(t *testing.T) {
	tm := managertest.Start(t)
	db := tm.Secret("db_pw", []byte("metrics-secret"))
	key := tm.Secret("api_key", []byte("k"))
	tm.Service("web", db, key)
	spec := childSpecIn(t, t.TempDir(), []string{tm.Addr}, tm.WorkerToken())
	spec.MetricsAddr = freeAddr(t)
	c := startChild(t, spec)
	cl := c.client(t)
	addr := spec.MetricsAddr
	waitUntil(t, "the grant", func() bool { return granted(t, cl, "web") })
	ctx := context.Background()
	// The probes above made requests, NOT_GRANTED ones until the grant
	// arrived: requests are counted from here. The server counts a request
	// after it has answered, so the probe's last one (its release) may
	// not be counted yet when the probe returns.
	waitUntil(t, "the probe's release to be counted", func() bool {
		return metric(scrape(t, addr), "lockbox_agent_localapi_requests_total", "op", "release", "code", "OK") >= 1
	})
	before := scrape(t, addr)
	delta := func(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
		return metric(mfs, name, labels...) - max(metric(before, name, labels...), 0)
	}

	// A container the agent holds a mount for (attach=false: the mount
	// is handed over and attached nowhere).
	_, files, err := cl.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "c1", Service: "web", Rootfs: "/nonexistent"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	// A container of a service this node is not granted fails closed,
	// and is counted under that code.
	if _, _, err := cl.Prepare(ctx, &api.PrepareRequest{Container: &api.Container{Id: "c2", Service: "other"}}); !localapi.IsCode(err, api.Error_NOT_GRANTED) {
		t.Fatalf("prepare of an ungranted service: %v", err)
	}
	if _, err := cl.List(ctx); err != nil {
		t.Fatal(err)
	}

	// The List, answered last on this connection, is counted last.
	var mfs map[string]*dto.MetricFamily
	waitUntil(t, "the list to be counted", func() bool {
		mfs = scrape(t, addr)
		return delta(mfs, "lockbox_agent_localapi_requests_total", "op", "list", "code", "OK") >= 1
	})
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lockbox_agent_session_connected", nil, 1},
		{"lockbox_agent_session_reconnects_total", nil, 0},
		{"lockbox_agent_services", nil, 1},
		{"lockbox_agent_secrets", nil, 2},
		{"lockbox_agent_grants", nil, 2},
		{"lockbox_agent_containers", nil, 1},
	} {
		if got := metric(mfs, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lockbox_agent_localapi_requests_total", []string{"op", "prepare", "code", "NOT_GRANTED"}, 1},
		{"lockbox_agent_localapi_requests_total", []string{"op", "prepare", "code", "OK"}, 1},
		{"lockbox_agent_localapi_requests_total", []string{"op", "list", "code", "OK"}, 1},
		{"lockbox_agent_localapi_requests_total", []string{"op", "release", "code", "OK"}, 0},
		{"lockbox_agent_localapi_request_duration_seconds", []string{"op", "prepare"}, 2},
	} {
		if got := delta(mfs, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v grew by %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	rev := metric(mfs, "lockbox_agent_applied_revision")
	if rev <= 0 {
		t.Errorf("applied revision %v with grants held", rev)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// The manager goes and comes back: connected drops to 0, then the
	// session is back as one reconnect.
	tm.Stop()
	waitUntil(t, "the session to drop", func() bool {
		return metric(scrape(t, addr), "lockbox_agent_session_connected") == 0
	})
	tm.Restart()
	waitUntil(t, "the session to come back", func() bool {
		return metric(scrape(t, addr), "lockbox_agent_session_connected") == 1
	})
	if got := metric(scrape(t, addr), "lockbox_agent_session_reconnects_total"); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}

	if err := cl.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	mfs = scrape(t, addr)
	if got := metric(mfs, "lockbox_agent_containers"); got != 0 {
		t.Errorf("containers = %v after the release", got)
	}
	// c1 named no process: only a release could end it. The probes
	// released theirs too.
	if got := delta(mfs, "lockbox_agent_releases_total", "cause", "release"); got != 1 {
		t.Errorf("releases{cause=release} grew by %v, want 1", got)
	}
	for _, cause := range []string{"exit", "reap", "reuse"} {
		if got := metric(mfs, "lockbox_agent_releases_total", "cause", cause); got != 0 {
			t.Errorf("releases{cause=%s} = %v, want 0", cause, got)
		}
	}

	// The listener goes with the agent.
	c.stop()
	if _, err := http.Get(fmt.Sprintf("http://%s/metrics", addr)); err == nil {
		t.Error("metrics still served after the agent stopped")
	}
}

// An address that cannot be bound stops the agent at start: the operator
// asked for metrics.
func TestMetricsAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tm := managertest.Start(t)
	spec := childSpecIn(t, t.TempDir(), []string{tm.Addr}, tm.WorkerToken())
	spec.MetricsAddr = l.Addr().String()
	b, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b), "GODEBUG=clobberfree=1,asyncpreemptoff=1")
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ctx.Err() != nil {
		t.Fatalf("the agent ran with its metrics address taken: %v", err)
	}
	logs, _ := os.ReadFile(spec.LogFile)
	if !strings.Contains(string(logs), "metrics listener on "+spec.MetricsAddr) {
		t.Errorf("the log does not say why the agent stopped:\n%s", logs)
	}
}

// The real `lockbox agent --metrics-addr` serves the same endpoint: the
// flag reaches the daemon.
func TestMetricsFromLockboxBinary(t *testing.T) {
	bin := lockboxBinary(t)
	tm := managertest.Start(t)
	data := marker(t, "metrics")
	tm.Service("web", tm.Secret("db_pw", data))
	spec := childSpecIn(t, t.TempDir(), []string{tm.Addr}, tm.WorkerToken())
	spec.Binary = bin
	spec.MetricsAddr = freeAddr(t)
	c := startChild(t, spec)
	waitUntil(t, "the grant", func() bool { return granted(t, c.client(t), "web") })
	mfs := scrape(t, spec.MetricsAddr)
	if got := metric(mfs, "lockbox_agent_session_connected"); got != 1 {
		t.Errorf("session connected = %v", got)
	}
	if got := metric(mfs, "lockbox_agent_secrets"); got != 1 {
		t.Errorf("secrets = %v", got)
	}
	resp, err := http.Get("http://" + spec.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, data) {
		t.Error("the metrics carry the secret's data")
	}
}
