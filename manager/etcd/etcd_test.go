package etcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func freePeerURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

func TestStartRestartAndJoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir1 := t.TempDir() + "/etcd"
	cfg1 := Config{Dir: dir1, Name: "m1", PeerURL: freePeerURL(t)}
	m1, err := Start(ctx, cfg1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir1)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("member dir mode: %v %v", st.Mode(), err)
	}
	if _, err := m1.Client().Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}

	// A second member joins through the first one's client.
	dir2 := t.TempDir() + "/etcd"
	peer2 := freePeerURL(t)
	initial, err := AddMember(ctx, m1.Client(), "m2", peer2)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Start(ctx, Config{Dir: dir2, Name: "m2", PeerURL: peer2, InitialCluster: initial})
	if err != nil {
		t.Fatalf("join with %q: %v", initial, err)
	}
	// It joined as a learner: no vote, linearizable reads refused.
	if !m2.IsLearner() {
		t.Fatal("joined member is not a learner")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := PromoteMember(ctx, m1.Client(), "m2", peer2)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLearnerNotReady) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := PromoteMember(ctx, m1.Client(), "m2", peer2); err != nil {
		t.Fatalf("promoting a voter: %v", err)
	}
	got, err := m2.Client().Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v1" {
		t.Fatalf("joined member reads %v, %v", got, err)
	}
	list, err := m1.Client().MemberList(ctx)
	if err != nil || len(list.Members) != 2 {
		t.Fatalf("members: %v %v", list, err)
	}
	// etcd refuses to remove a member until it has been connected for a
	// health interval (5s); until then the cluster reports "unhealthy":
	// Member.RemoveMember retries through that, within its ctx.
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	if err := m1.RemoveMember(rctx, "m2"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveMember(ctx, m1.Client(), "m2"); !errors.Is(err, ErrNoMember) {
		t.Fatalf("second removal: %v, want ErrNoMember", err)
	}
	// Removing a member that is gone is done, not an error.
	if err := m1.RemoveMember(rctx, "m2"); err != nil {
		t.Fatal(err)
	}
	m2.Close()

	// Restart the first member from its data: the value survives.
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if !HasData(dir1) {
		t.Fatal("HasData is false after a run")
	}
	m1, err = Start(ctx, cfg1)
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close()
	got, err = m1.Client().Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart: %v, %v", got, err)
	}
	if !m1.IsLeader() {
		t.Fatal("single member is not its own leader")
	}
}

func TestConnectFailsClearly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := Connect(ctx, []string{fmt.Sprintf("unix://%s/none.sock", t.TempDir())}, nil)
	if err == nil {
		t.Fatal("Connect to nothing succeeded")
	}
}

// A member added for a joiner that never starts must not cost the
// cluster its quorum: it is a learner until promoted.
func TestAbandonedJoinKeepsQuorum(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m1, err := Start(ctx, Config{Dir: t.TempDir() + "/etcd", Name: "m1", PeerURL: freePeerURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m1.Close()
	ghost := freePeerURL(t)
	if _, err := AddMember(ctx, m1.Client(), "ghost", ghost); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := m1.Client().Put(wctx, "still", "writable"); err != nil {
		t.Fatalf("write after an abandoned join: %v", err)
	}
	if err := PromoteMember(ctx, m1.Client(), "ghost", ghost); !errors.Is(err, ErrLearnerNotReady) {
		t.Fatalf("promoting a learner that never started: %v", err)
	}
}
