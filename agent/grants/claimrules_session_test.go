package grants_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/grants"
	"github.com/lockbox-project/lockbox/agent/session"
	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/claimrule"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

// signalling is the grant cache, telling the test of every message
// applied.
type signalling struct {
	*grants.Cache
	applied chan struct{}
}

func (s *signalling) Apply(m *dapi.SessionMessage) error {
	if err := s.Cache.Apply(m); err != nil {
		return err
	}
	// A full channel already wakes the waiter, which checks again.
	select {
	case s.applied <- struct{}{}:
	default:
	}
	return nil
}

func (s *signalling) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-s.applied:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestClaimRulesReachTheAgentCache: rules set through the admin API (as
// "lockbox service create --claim" sends them) reach a real agent session's
// cache in canonical form, an update of the rules alone replaces them
// there, and the cache decides with them. It also proves that a real
// session announces claim-rule enforcement (api/dispatcher.AgentFeatures):
// without that, the managers withhold db from the node.
func TestClaimRulesReachTheAgentCache(t *testing.T) {
	tm := managertest.Start(t)
	sec := tm.Secret("pw", []byte("x"))
	spec := managertest.ServiceSpec("db", sec)
	spec.ClaimRules = []string{"K8S.namespace == payments"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	created, err := tm.Admin().CreateService(ctx, &adminapi.CreateServiceRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}

	cache := &signalling{Cache: grants.NewCache(), applied: make(chan struct{}, 64)}
	t.Cleanup(cache.Close)
	sctx, stop := context.WithCancel(context.Background())
	sess, err := session.New(sctx, session.Config{StateDir: t.TempDir(), Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()),
		Cache: cache, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(sctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})

	rulesOf := func() []string {
		rs, _ := cache.Rules("db")
		return rs.Strings()
	}
	cache.waitFor(t, "the snapshot with db's rules", func() bool { return slices.Equal(rulesOf(), []string{"k8s.namespace==payments"}) })
	rs, _ := cache.Rules("db")
	pay := claimrule.Facts{Pod: &claimrule.Pod{Namespace: "payments"}}
	dev := claimrule.Facts{Pod: &claimrule.Pod{Namespace: "dev"}}
	if err := rs.Decide(pay); err != nil {
		t.Fatalf("payments pod refused: %v", err)
	}
	if err := rs.Decide(dev); !errors.Is(err, claimrule.ErrRefused) {
		t.Fatalf("dev pod admitted: %v", err)
	}

	spec = created.Service.Spec
	spec.ClaimRules = []string{"k8s.namespace==dev"}
	if _, err := tm.Admin().UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: "db", Version: created.Service.Meta.Version, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	cache.waitFor(t, "db's new rules", func() bool { return slices.Equal(rulesOf(), []string{"k8s.namespace==dev"}) })
	rs, _ = cache.Rules("db")
	if rs.Decide(dev) != nil || rs.Decide(pay) == nil {
		t.Fatalf("after the update the cache decides with %q", rs.Strings())
	}
}
