package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "lockbox_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr()

	for _, tc := range []struct {
		path string
		code int
		want []string
	}{
		{"/metrics", 200, []string{"lockbox_test_total 3", "go_goroutines ", "process_start_time_seconds ", "promhttp_metric_handler_requests_total"}},
		{"/", 404, nil},
		{"/debug/pprof/", 404, nil},
	} {
		code, body := get(t, base+tc.path)
		if code != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, code, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in\n%s", tc.path, w, body)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("metrics still served after Close")
	}
}

func TestListenError(t *testing.T) {
	s, err := Listen("127.0.0.1:0", NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Listen(s.Addr(), NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Fatalf("second listener on %s: %v", s.Addr(), err)
	}
}
