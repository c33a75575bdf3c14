package nri

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/lockbox-project/lockbox/api/agent"
)

// syncAgent is an agent whose list can fail (the agent is down) and be
// mended while the plugin retries.
type syncAgent struct {
	mu       sync.Mutex
	held     []string
	listErr  error
	released []string
}

func (a *syncAgent) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	return nil, nil, errors.New("not used")
}

func (a *syncAgent) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	return nil, errors.New("not used")
}

func (a *syncAgent) Release(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.released = append(a.released, id)
	return nil
}

func (a *syncAgent) List(ctx context.Context) (*agent.ListResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.listErr != nil {
		return nil, a.listErr
	}
	resp := &agent.ListResponse{}
	for _, id := range a.held {
		resp.Containers = append(resp.Containers, &agent.MountedContainer{Id: id})
	}
	return resp, nil
}

func (a *syncAgent) setListErr(err error) {
	a.mu.Lock()
	a.listErr = err
	a.mu.Unlock()
}

// recorder is an slog handler that keeps each record as one line:
// level, message and attributes.
type recorder struct {
	attrs []slog.Attr
	lines *lines
}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{attrs: append(slices.Clone(r.attrs), as...), lines: r.lines}
}

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	for _, a := range r.attrs {
		b.WriteString(" " + a.String())
	}
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.lines.mu.Lock()
	r.lines.l = append(r.lines.l, b.String())
	r.lines.mu.Unlock()
	return nil
}

func (l *lines) has(f func(string) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.l, f)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.l, "\n")
}

// evictions records the containers the plugin evicts instead of killing
// them.
type evictions struct {
	mu  sync.Mutex
	ids []string
	c   chan string
}

func (e *evictions) evict(_ string, c *api.Container) error {
	e.mu.Lock()
	e.ids = append(e.ids, c.GetId())
	e.mu.Unlock()
	e.c <- c.GetId()
	return nil
}

func (e *evictions) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.ids)
}

func testPlugin(a Agent) (*Plugin, *evictions, *lines) {
	p := New(a)
	ev := &evictions{c: make(chan string, 10)}
	p.sync.evict = ev.evict
	p.sync.minRetry = time.Millisecond
	l := &lines{}
	p.SetLogger(slog.New(&recorder{lines: l}))
	return p, ev, l
}

// The reconnect's Synchronize evicts each running claiming container the
// agent does not hold (it started while the plugin was away: StartContainer
// never attached its secrets) and nothing else.
func TestSynchronizeEvicts(t *testing.T) {
	claimWeb := map[string]string{ServiceAnnotation: "web"}
	podClaim := &api.PodSandbox{Id: "pod1", Annotations: map[string]string{ServiceAnnotation: "db"}}
	running := api.ContainerState_CONTAINER_RUNNING
	tests := []struct {
		name    string
		held    []string
		ctr     *api.Container
		evicted bool
	}{
		{"claiming, not held", nil, &api.Container{Id: "c1", Name: "app", State: running, Annotations: claimWeb}, true},
		{"pod claims, not held", nil, &api.Container{Id: "c1", Name: "app", PodSandboxId: "pod1", State: running}, true},
		{"paused claiming, not held", nil, &api.Container{Id: "c1", State: api.ContainerState_CONTAINER_PAUSED, Annotations: claimWeb}, true},
		{"claiming, held", []string{"c1"}, &api.Container{Id: "c1", State: running, Annotations: claimWeb}, false},
		{"non-claiming", nil, &api.Container{Id: "c1", State: running}, false},
		// Its start goes through StartContainer, now that the plugin is
		// back: the agent attaches its secrets or the start fails.
		{"claiming, created", nil, &api.Container{Id: "c1", State: api.ContainerState_CONTAINER_CREATED, Annotations: claimWeb}, false},
		{"claiming, stopped", nil, &api.Container{Id: "c1", State: api.ContainerState_CONTAINER_STOPPED, Annotations: claimWeb}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ev, log := testPlugin(&syncAgent{held: tt.held})
			_, err := p.Synchronize(context.Background(), []*api.PodSandbox{podClaim}, []*api.Container{tt.ctr})
			if err != nil {
				t.Fatal(err)
			}
			got := ev.got()
			if tt.evicted != (len(got) == 1 && got[0] == "c1") || (!tt.evicted && len(got) != 0) {
				t.Fatalf("evicted %v, want evicted=%v", got, tt.evicted)
			}
			if tt.evicted {
				svc := "web"
				if tt.ctr.Annotations == nil {
					svc = "db"
				}
				if !log.has(func(l string) bool {
					return strings.Contains(l, "evicted") && strings.Contains(l, `service=`+svc) && strings.Contains(l, AwayReason)
				}) {
					t.Errorf("no log of the eviction naming service %s and why:\n%s", svc, log)
				}
			}
		})
	}
}

// With the agent unreachable at Synchronize, nothing is evicted (a down
// agent must not take every claiming container with it), the plugin stays
// connected (no error), the failure is logged, and the reconcile is retried
// until the agent answers: then the container it does not hold goes.
func TestSynchronizeAgentDown(t *testing.T) {
	fa := &syncAgent{held: []string{"held"}, listErr: errors.New("dial agent at /run/lockbox/agent.sock: connect: no such file or directory")}
	p, ev, log := testPlugin(fa)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.setLife(ctx)
	claimWeb := map[string]string{ServiceAnnotation: "web"}
	running := api.ContainerState_CONTAINER_RUNNING
	_, err := p.Synchronize(context.Background(), nil, []*api.Container{
		{Id: "away", State: running, Annotations: claimWeb},
		{Id: "held", State: running, Annotations: claimWeb},
		{Id: "plain", State: running},
	})
	if err != nil {
		t.Fatalf("synchronize failed with the agent down (the plugin would disconnect): %v", err)
	}
	if got := ev.got(); len(got) != 0 {
		t.Fatalf("evicted %v with the agent down", got)
	}
	if !log.has(func(l string) bool {
		return strings.HasPrefix(l, "ERROR") && strings.Contains(l, "cannot be reached") && strings.Contains(l, "no such file")
	}) {
		t.Fatalf("agent failure not logged:\n%s", log)
	}
	select {
	case <-p.Synced():
	default:
		t.Fatal("not synced")
	}
	if got := ev.got(); len(got) != 0 {
		t.Fatalf("evicted %v while the agent is still down", got)
	}

	fa.setListErr(nil)
	select {
	case id := <-ev.c:
		if id != "away" {
			t.Fatalf("evicted %s, want away", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no eviction after the agent came back")
	}
	// Only the container the agent does not hold went, once.
	p.sync.retries.Wait()
	if !log.has(func(l string) bool { return strings.Contains(l, "settled") }) {
		t.Errorf("retry settled without saying so:\n%s", log)
	}
	if got := ev.got(); !slices.Equal(got, []string{"away"}) {
		t.Fatalf("evicted %v, want [away]", got)
	}
}

// A newer Synchronize (the plugin reconnected again) or the plugin's end
// stops the retry of an older one: once the agent answers, a retry left
// running would evict from its stale snapshot.
func TestSynchronizeRetryStops(t *testing.T) {
	for _, how := range []string{"superseded", "plugin stopped"} {
		t.Run(how, func(t *testing.T) {
			fa := &syncAgent{listErr: errors.New("agent down")}
			p, ev, _ := testPlugin(fa)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p.setLife(ctx)
			ctrs := []*api.Container{{Id: "away", State: api.ContainerState_CONTAINER_RUNNING, Annotations: map[string]string{ServiceAnnotation: "web"}}}
			p.Synchronize(context.Background(), nil, ctrs)
			if how == "superseded" {
				// The newer snapshot no longer lists the container.
				p.Synchronize(context.Background(), nil, nil)
			} else {
				cancel()
			}
			fa.setListErr(nil)
			p.sync.retries.Wait()
			if got := ev.got(); len(got) != 0 {
				t.Fatalf("evicted %v from a stale snapshot", got)
			}
		})
	}
}

// StartContainer fails closed: an agent that refuses the claim, or cannot
// be reached, fails the start with the service's name, and the plugin
// records no claim for the container.
func TestStartContainerFailsClosed(t *testing.T) {
	for _, err := range []error{
		errors.New("agent: NOT_GRANTED: service \"web\" is not granted to this node"),
		errors.New("dial agent at /run/lockbox/agent.sock: connect: connection refused"),
	} {
		fa := &fakeAgent{err: err}
		p := New(fa)
		ctr := &api.Container{Id: "c1", Name: "app", Pid: uint32(os.Getpid()), Annotations: map[string]string{ServiceAnnotation: "web"}}
		got := p.StartContainer(context.Background(), &api.PodSandbox{}, ctr)
		if got == nil || !strings.Contains(got.Error(), `service "web"`) || !strings.Contains(got.Error(), err.Error()) {
			t.Errorf("start with agent error %q: %v, want a failure naming the service", err, got)
		}
		if len(p.Claims()) != 0 {
			t.Errorf("claims %v after a failed start", p.Claims())
		}
	}
}
