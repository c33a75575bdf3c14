package session

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/agent/grants"
	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// applied is one message the cache took.
type applied struct {
	typ dapi.SessionMessage_Type
	rev uint64
}

// recorder is the grant cache, telling the test of every message applied.
type recorder struct {
	*grants.Cache
	ch chan applied
}

func (r *recorder) Apply(m *dapi.SessionMessage) error {
	typ, rev := m.GetType(), m.GetRevision()
	if err := r.Cache.Apply(m); err != nil {
		return err
	}
	r.ch <- applied{typ, rev}
	return nil
}

func newRecorder(t *testing.T) *recorder {
	c := grants.NewCache()
	t.Cleanup(c.Close)
	return &recorder{Cache: c, ch: make(chan applied, 256)}
}

// waitFor takes applied messages until cond holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) []applied {
	t.Helper()
	var seen []applied
	timeout := time.After(20 * time.Second)
	for !cond() {
		select {
		case a := <-r.ch:
			seen = append(seen, a)
		case <-timeout:
			t.Fatalf("timed out waiting for %s; messages seen: %v", what, seen)
		}
	}
	return seen
}

func readSecret(t *testing.T, c *grants.Cache, service, secretID string) (string, error) {
	t.Helper()
	v, err := c.Restrict(service)
	if err != nil {
		return "", err
	}
	var out string
	err = v.WithSecret(secretID, func(b []byte) error { out = string(b); return nil })
	return out, err
}

func hasGrant(c *grants.Cache, service, secretID string) bool {
	v, err := c.Restrict(service)
	if err != nil {
		return false
	}
	for _, g := range v.Grants() {
		if g.SecretID == secretID {
			return true
		}
	}
	return false
}

func waitState(t *testing.T, s *Session, up bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for s.Connected() != up {
		select {
		case <-s.stateCh:
		case <-timeout:
			t.Fatalf("session never became connected=%v", up)
		}
	}
}

func TestJoinStreamSurviveManagerLossResume(t *testing.T) {
	tm := managertest.Start(t)
	dbpw := tm.Secret("db_pw", []byte("hunter2-marker"))
	web := tm.Service("web", dbpw)

	rec := newRecorder(t)
	state := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess, err := New(ctx, Config{StateDir: state, Managers: []string{"tcp://" + tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: rec, Log: quietLog(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if sess.NodeID() == "" || rec.NodeID() != sess.NodeID() {
		t.Fatalf("node id %q, cache has %q", sess.NodeID(), rec.NodeID())
	}
	runErr := make(chan error, 1)
	go func() { runErr <- sess.Run(ctx) }()

	// The COMPLETE snapshot brings web and its secret.
	seen := rec.waitFor(t, "web's grant", func() bool { return hasGrant(rec.Cache, "web", dbpw.Id) })
	if seen[0].typ != dapi.SessionMessage_COMPLETE {
		t.Errorf("first message %v, want COMPLETE", seen[0])
	}
	if got, err := readSecret(t, rec.Cache, "web", dbpw.Id); err != nil || got != "hunter2-marker" {
		t.Fatalf("web's db_pw: %q %v", got, err)
	}

	// A delta: web gains api_key.
	apiKey := tm.Secret("api_key", []byte("k-1"))
	web = tm.UpdateService(web, dbpw, apiKey)
	seen = rec.waitFor(t, "api_key", func() bool { return hasGrant(rec.Cache, "web", apiKey.Id) })
	if seen[len(seen)-1].typ != dapi.SessionMessage_INCREMENTAL {
		t.Errorf("delta came as %v", seen)
	}
	viewBefore, err := rec.Restrict("web")
	if err != nil {
		t.Fatal(err)
	}

	// Every manager goes: the node keeps serving what it holds.
	waitState(t, sess, true)
	if n := sess.Reconnects(); n != 0 {
		t.Errorf("%d reconnects on the first session", n)
	}
	tm.Stop()
	waitState(t, sess, false)
	if got, err := readSecret(t, rec.Cache, "web", apiKey.Id); err != nil || got != "k-1" {
		t.Fatalf("with the manager gone, web's api_key: %q %v", got, err)
	}

	// The manager comes back: the session resumes by itself.
	tm.Restart()
	waitState(t, sess, true)
	if n := sess.Reconnects(); n != 1 {
		t.Errorf("%d reconnects after the manager came back, want 1", n)
	}

	// The node is cut off (its session stopped) while the cluster changes...
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	cache := tm.Secret("cache_pw", []byte("c-2"))
	tm.Service("cache", cache)
	tm.UpdateService(web, dbpw)
	revBefore := rec.Revision()

	// ...and gets exactly the missed deltas when it resumes.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { runErr <- sess.Run(ctx) }()
	seen = rec.waitFor(t, "the missed deltas", func() bool {
		return hasGrant(rec.Cache, "cache", cache.Id) && !hasGrant(rec.Cache, "web", apiKey.Id)
	})
	for _, a := range seen {
		if a.typ != dapi.SessionMessage_INCREMENTAL || a.rev < revBefore {
			t.Errorf("resume from revision %d brought %v, want only INCREMENTAL messages from it on", revBefore, seen)
		}
	}
	if got, err := readSecret(t, rec.Cache, "cache", cache.Id); err != nil || got != "c-2" {
		t.Errorf("cache's secret: %q %v", got, err)
	}
	// The removed grant's bytes are gone, even for a view taken before.
	if err := viewBefore.WithSecret(apiKey.Id, func([]byte) error { return nil }); !errors.Is(err, grants.ErrNotDelivered) {
		t.Errorf("removed secret still readable: %v", err)
	}

	// The state dir holds credentials and addresses, 0600, and no secret.
	ents, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
		fi, _ := e.Info()
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %o", e.Name(), fi.Mode().Perm())
		}
		b, _ := os.ReadFile(filepath.Join(state, e.Name()))
		for _, marker := range []string{"hunter2-marker", "k-1", "c-2"} {
			if strings.Contains(string(b), marker) {
				t.Errorf("%s holds secret data", e.Name())
			}
		}
	}
	for _, want := range []string{keyFile, certFile, caFile, managersFile} {
		if !names[want] {
			t.Errorf("state dir lacks %s (has %v)", want, names)
		}
	}

	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}

	// A restart needs no token: same node, and a COMPLETE snapshot.
	rec2 := newRecorder(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	sess2, err := New(ctx2, Config{StateDir: state, Cache: rec2, Log: quietLog(), MinBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if sess2.NodeID() != sess.NodeID() {
		t.Errorf("node id after restart %q, want %q", sess2.NodeID(), sess.NodeID())
	}
	if got := sess2.Managers(); len(got) != 1 || got[0] != tm.Addr {
		t.Errorf("managers after restart %v (from the state dir)", got)
	}
	go sess2.Run(ctx2)
	rec2.waitFor(t, "snapshot after restart", func() bool { return hasGrant(rec2.Cache, "cache", cache.Id) })
}

func TestJoinRefusesWrongCA(t *testing.T) {
	tm := managertest.Start(t)
	tok, err := jointoken.Parse(tm.WorkerToken())
	if err != nil {
		t.Fatal(err)
	}
	tok.CADigest = strings.Repeat("0", 64)
	_, err = New(context.Background(), Config{StateDir: t.TempDir(), Managers: []string{tm.Addr}, Token: []byte(tok.String()), Cache: newRecorder(t), Log: quietLog()})
	if err == nil || !strings.Contains(err.Error(), "does not match the join token") {
		t.Fatalf("join with a token for another CA: %v", err)
	}
}

func TestFirstStartNeedsToken(t *testing.T) {
	_, err := New(context.Background(), Config{StateDir: t.TempDir(), Managers: []string{"127.0.0.1:1"}, Cache: newRecorder(t)})
	if !errors.Is(err, ErrNeedToken) {
		t.Fatalf("got %v", err)
	}
}

// TestNewZeroesTheToken: New leaves no copy of the token in the caller's
// buffer, whether it joined with it, had joined already, or failed.
func TestNewZeroesTheToken(t *testing.T) {
	tm := managertest.Start(t)
	state := t.TempDir()
	zeroed := func(b []byte) bool { return len(b) > 0 && bytes.Count(b, []byte{0}) == len(b) }
	for _, step := range []struct {
		name  string
		state string
		ok    bool
	}{
		{"join", state, true},
		{"already joined", state, true},
		{"join refused", t.TempDir(), false},
	} {
		tok := []byte(tm.WorkerToken())
		if !step.ok {
			tok[len(tok)-1] ^= 1 // a secret the manager does not know
		}
		_, err := New(context.Background(), Config{StateDir: step.state, Managers: []string{tm.Addr}, Token: tok, Cache: newRecorder(t), Log: quietLog()})
		if step.ok != (err == nil) {
			t.Fatalf("%s: %v", step.name, err)
		}
		if !zeroed(tok) {
			t.Errorf("%s: the token buffer still holds %q", step.name, tok)
		}
	}
}

func TestRenew(t *testing.T) {
	tm := managertest.Start(t)
	state := t.TempDir()
	sess, err := New(context.Background(), Config{StateDir: state, Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: newRecorder(t), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	old := sess.Identity().Leaf()
	life := old.NotAfter.Sub(old.NotBefore)
	if got := renewAt(old).Sub(old.NotBefore); got != life*2/3 || life < time.Hour {
		t.Errorf("renewal due %v into a %v certificate, want two thirds", got, life)
	}
	oldPEM, _ := os.ReadFile(filepath.Join(state, certFile))
	if err := sess.Renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	cur := sess.Identity().Leaf()
	if cur.SerialNumber.Cmp(old.SerialNumber) == 0 || cur.Subject.CommonName != old.Subject.CommonName {
		t.Errorf("renewed cert serial %v (old %v), node %q (old %q)", cur.SerialNumber, old.SerialNumber, cur.Subject.CommonName, old.Subject.CommonName)
	}
	newPEM, _ := os.ReadFile(filepath.Join(state, certFile))
	if string(newPEM) == string(oldPEM) {
		t.Error("renewed certificate not saved")
	}
	// The saved credentials load and match.
	id, err := loadIdentity(state)
	if err != nil || id.Leaf().SerialNumber.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("reload after renew: %v", err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startSession(t *testing.T, tm *managertest.Manager) (*Session, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	sess, err := New(ctx, Config{StateDir: t.TempDir(), Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: rec, Log: quietLog(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sess, rec
}

// TestHeartbeats: the manager (heartbeat period 500ms) marks a node down
// after three silent periods; a node whose session is up stays ready well
// past that, which only its heartbeats achieve.
func TestHeartbeats(t *testing.T) {
	tm := managertest.Start(t)
	sec := tm.Secret("a", []byte("x"))
	tm.Service("web", sec)
	sess, rec := startSession(t, tm)
	rec.waitFor(t, "the snapshot", func() bool { return hasGrant(rec.Cache, "web", sec.Id) })
	if got := time.Duration(sess.period.Load()); got != 500*time.Millisecond {
		t.Errorf("heartbeat period %v, want the manager's 500ms", got)
	}
	// Absence of an event over time: a timer is the only way to wait.
	<-time.After(6 * 500 * time.Millisecond)
	if st := tm.Node(sess.NodeID()).GetState(); st != types.NodeState_NODE_STATE_READY {
		t.Errorf("node state %v after six periods with heartbeats", st)
	}
}

// TestRemovedNodeDropsGrants: a node the cluster removes stops serving
// what it held (unlike a node that merely lost every manager).
func TestRemovedNodeDropsGrants(t *testing.T) {
	tm := managertest.Start(t)
	sec := tm.Secret("a", []byte("x"))
	tm.Service("web", sec)
	sess, rec := startSession(t, tm)
	rec.waitFor(t, "the snapshot", func() bool { return hasGrant(rec.Cache, "web", sec.Id) })
	view, err := rec.Restrict("web")
	if err != nil {
		t.Fatal(err)
	}
	tm.RemoveNode(sess.NodeID())
	rec.waitFor(t, "the grants to be dropped", func() bool { _, err := rec.Restrict("web"); return err != nil })
	if err := view.WithSecret(sec.Id, func([]byte) error { return nil }); !errors.Is(err, grants.ErrNotDelivered) {
		t.Errorf("secret of a removed node still readable: %v", err)
	}
}

// TestFailoverToManagersLearnedFromTheStream: the agent is told of one
// manager only; it learns the others from the stream, and when the one it
// knew goes, it keeps getting changes through another.
func TestFailoverToManagersLearnedFromTheStream(t *testing.T) {
	m1 := managertest.Start(t)
	m2 := m1.Join(t)
	m3 := m1.Join(t)
	sec := m1.Secret("a", []byte("x"))
	web := m1.Service("web", sec)
	sess, rec := startSession(t, m1)
	rec.waitFor(t, "the snapshot", func() bool { return hasGrant(rec.Cache, "web", sec.Id) })
	waitState(t, sess, true)
	rec.waitFor(t, "all three managers to be known", func() bool { return len(sess.Managers()) == 3 })
	got := map[string]bool{}
	for _, a := range sess.Managers() {
		got[a] = true
	}
	if !got[m1.Addr] || !got[m2.Addr] || !got[m3.Addr] {
		t.Fatalf("known managers %v, want %s %s %s", sess.Managers(), m1.Addr, m2.Addr, m3.Addr)
	}

	m1.Stop()
	sec2 := m2.Secret("b", []byte("y"))
	m2.UpdateService(web, sec, sec2)
	rec.waitFor(t, "the change made through another manager", func() bool { return hasGrant(rec.Cache, "web", sec2.Id) })
	if got, err := readSecret(t, rec.Cache, "web", sec2.Id); err != nil || got != "y" {
		t.Errorf("b after failover: %q %v", got, err)
	}
}

// TestSkipsManagerThatNeverAnswers: a "manager" that accepts connections
// and says nothing does not hold the node; it moves on to one that works.
func TestSkipsManagerThatNeverAnswers(t *testing.T) {
	tm := managertest.Start(t)
	sec := tm.Secret("a", []byte("x"))
	tm.Service("web", sec)
	state := t.TempDir()
	// Join through the real manager first.
	if _, err := New(context.Background(), Config{StateDir: state, Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: newRecorder(t), Log: quietLog()}); err != nil {
		t.Fatal(err)
	}

	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never read, never answered
			mu.Unlock()
		}
	}()

	rec := newRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess, err := New(ctx, Config{StateDir: state, Managers: []string{mute.Addr().String(), tm.Addr}, Cache: rec, Log: quietLog(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, FirstMessageTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := sess.Managers()[0]; got != mute.Addr().String() {
		t.Fatalf("first manager tried is %s, want the mute one", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.Run(ctx)
	}()
	rec.waitFor(t, "the snapshot through the working manager", func() bool { return hasGrant(rec.Cache, "web", sec.Id) })
	cancel()
	<-done
}

// TestRenewalSchedule drives the renewal loop with a fake timer: it waits
// until two thirds of the certificate's life, renews, then waits for two
// thirds of the new certificate's life.
func TestRenewalSchedule(t *testing.T) {
	tm := managertest.Start(t)
	sess, err := New(context.Background(), Config{StateDir: t.TempDir(), Managers: []string{tm.Addr}, Token: []byte(tm.WorkerToken()), Cache: newRecorder(t), Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	type timer struct {
		d  time.Duration
		ch chan time.Time
	}
	timers := make(chan timer)
	sess.after = func(d time.Duration) <-chan time.Time {
		ch := make(chan time.Time, 1)
		timers <- timer{d, ch}
		return ch
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sess.renewLoop(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	check := func(what string, d time.Duration) {
		t.Helper()
		leaf := sess.Identity().Leaf()
		want := time.Until(renewAt(leaf))
		if d > want+time.Second || d < want-time.Minute || d < 24*time.Hour {
			t.Errorf("%s: waits %v, want about %v (2/3 of %v)", what, d, want, leaf.NotAfter.Sub(leaf.NotBefore))
		}
	}
	first := <-timers
	check("first wait", first.d)
	serial := sess.Identity().Leaf().SerialNumber
	first.ch <- time.Now()
	second := <-timers // armed only after the renewal finished
	if sess.Identity().Leaf().SerialNumber.Cmp(serial) == 0 {
		t.Fatal("timer fired but the certificate was not renewed")
	}
	check("after renewal", second.d)
}
