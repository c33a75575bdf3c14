package store_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
	"github.com/lockbox-project/lockbox/manager/store"
)

func initCluster(t *testing.T, s *store.Store) {
	t.Helper()
	err := s.InitCluster(context.Background(), store.ClusterInit{
		ID:         "c1",
		Root:       store.CARoot{CertPEM: []byte("cert"), SealedKey: []byte("sealed"), KeyBound: true},
		JoinTokens: store.SealedJoinTokens{Generation: 1, Sealed: []byte("tokens-v1")},
		CRL:        []byte("crl-v1"),
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClusterInitOnce(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.GetCluster(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cluster before init: %v", err)
	}
	initCluster(t, s)
	second := store.ClusterInit{ID: "c2", JoinTokens: store.SealedJoinTokens{Generation: 1, Sealed: []byte("t")}}
	if err := s.InitCluster(ctx, second); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	c, err := s.GetCluster(ctx)
	if err != nil || c.ID != "c1" || string(c.Root.SealedKey) != "sealed" || len(c.Revoked) != 0 {
		t.Fatalf("cluster %+v, %v", c, err)
	}
}

// Every shared value is compare-and-swapped: a writer holding a stale
// version loses and nothing is written.
func TestClusterSwapsCompareVersions(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	initCluster(t, s)
	c, _ := s.GetCluster(ctx)
	_, tokVer, _ := s.JoinTokens(ctx)
	_, crlVer, _ := s.CRL(ctx)
	for _, tc := range []struct {
		name    string
		swap    func(version int64) (bool, error)
		read    func() (string, error)
		version int64
	}{
		{"tokens", func(v int64) (bool, error) {
			return s.SwapJoinTokens(ctx, store.SealedJoinTokens{Generation: 2, Sealed: []byte("tokens-v2")}, v)
		}, func() (string, error) { t, _, err := s.JoinTokens(ctx); return string(t.Sealed), err }, tokVer},
		{"crl", func(v int64) (bool, error) { return s.SwapCRL(ctx, []byte("crl-v2"), v) },
			func() (string, error) { b, _, err := s.CRL(ctx); return string(b), err }, crlVer},
		{"root", func(v int64) (bool, error) {
			return s.SwapCARoot(ctx, store.CARoot{CertPEM: []byte("cert"), SealedKey: []byte("resealed")}, v)
		}, func() (string, error) { c, err := s.GetCluster(ctx); return string(c.Root.SealedKey), err }, c.RootVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tc.read()
			if ok, err := tc.swap(tc.version - 1); ok || err != nil {
				t.Fatalf("stale swap: %v %v", ok, err)
			}
			if got, _ := tc.read(); got != before {
				t.Fatalf("stale swap wrote %q", got)
			}
			if ok, err := tc.swap(tc.version); !ok || err != nil {
				t.Fatalf("current swap: %v %v", ok, err)
			}
			if got, _ := tc.read(); got == before {
				t.Fatal("current swap wrote nothing")
			}
		})
	}
}

// The sealed CA key and join tokens are bound to their records by AD that
// only the store names: distinct for the two records and for every
// generation of the tokens, and free of the store's prefix (a backup
// restored under another prefix still opens).
func TestClusterRecordADs(t *testing.T) {
	srv := etcdtest.Start(t)
	s, other := store.New(srv.Client(), nil), store.New(srv.Client(), nil, store.WithPrefix("/elsewhere/"))
	ads := map[string]string{}
	for name, ad := range map[string][]byte{
		"ca key":   s.CAKeyAD(),
		"tokens 1": s.JoinTokensAD(1),
		"tokens 2": s.JoinTokensAD(2),
		"tokens 0": s.JoinTokensAD(0),
	} {
		if prev, dup := ads[string(ad)]; dup {
			t.Fatalf("%s and %s share the AD %q", name, prev, ad)
		}
		ads[string(ad)] = name
	}
	if !bytes.Equal(s.CAKeyAD(), other.CAKeyAD()) || !bytes.Equal(s.JoinTokensAD(7), other.JoinTokensAD(7)) {
		t.Fatal("the AD depends on the store's prefix")
	}
}

// Join tokens stored before they were bound (the raw sealed bytes) read
// as generation 0, unbound; generation 0 is never written.
func TestJoinTokensFormats(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	initCluster(t, s)
	got, _, err := s.JoinTokens(ctx)
	if err != nil || got.Generation != 1 || !got.Bound() || string(got.Sealed) != "tokens-v1" {
		t.Fatalf("bound tokens: %+v, %v", got, err)
	}
	legacy := []byte{0x02, 0, 0, 0, 1, 'x'}
	if _, err := s.Client().Put(ctx, store.DefaultPrefix+"cluster/ca/tokens", string(legacy)); err != nil {
		t.Fatal(err)
	}
	got, ver, err := s.JoinTokens(ctx)
	if err != nil || got.Generation != 0 || got.Bound() || !bytes.Equal(got.Sealed, legacy) {
		t.Fatalf("legacy tokens: %+v, %v", got, err)
	}
	if ok, err := s.SwapJoinTokens(ctx, store.SealedJoinTokens{Sealed: []byte("unbound")}, ver); ok || !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("swap of generation 0: %v, %v", ok, err)
	}
}

func TestRevokedSerialsAndRecording(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	initCluster(t, s)
	later, earlier := time.Now().Add(time.Hour), time.Now().Add(-time.Hour)
	for _, rec := range []struct {
		node string
		cert store.IssuedCert
	}{
		{"a", store.IssuedCert{Serial: "1f", NotAfter: later, Peer: true}},
		{"a", store.IssuedCert{Serial: "2e", Peer: true}},                    // expiry unknown: listed
		{"a", store.IssuedCert{Serial: "5b", NotAfter: earlier, Peer: true}}, // expired: TLS refuses it anyway
		{"w", store.IssuedCert{Serial: "6a", NotAfter: later}},               // a worker's: cannot reach a peer port
		{"b", store.IssuedCert{Serial: "3d", NotAfter: later, Peer: true}},   // not revoked
	} {
		if err := s.RecordCertificate(ctx, rec.node, rec.cert); err != nil {
			t.Fatal(err)
		}
	}
	// A record written before records said more: the time only.
	if _, err := s.Client().Put(ctx, store.DefaultPrefix+"cluster/certs/a/7c", time.Now().UTC().Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "w"} {
		if err := s.Revoke(ctx, n, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	serials, _, err := s.RevokedSerials(ctx)
	if err != nil || !slices.Equal(serials, []string{"1f", "2e", "7c"}) {
		t.Fatalf("revoked serials %v, %v; want 1f 2e 7c", serials, err)
	}
	if err := s.RecordCertificate(ctx, "a", store.IssuedCert{Serial: "4c", Peer: true}); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("record for a revoked node: %v", err)
	}
	if err := s.RecordCertificate(ctx, "a/../b", store.IssuedCert{Serial: "4c"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("record with a path in the node ID: %v", err)
	}
	c, err := s.GetCluster(ctx)
	if _, ok := c.Revoked["a"]; err != nil || !ok || len(c.Revoked) != 2 {
		t.Fatalf("revoked %v, %v", c.Revoked, err)
	}
}

// A follower whose watch cannot start (its revision was compacted) or
// breaks reloads in full: it never misses a change.
func TestFollowReloadsWhenTheWatchBreaks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	initCluster(t, s)
	for _, id := range []string{"a", "b"} {
		if err := s.Revoke(ctx, id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	got := make(chan map[string]struct{}, 16)
	go s.FollowRevocations(ctx, 1, func(set map[string]struct{}) { got <- set })
	select {
	case set := <-got:
		if len(set) != 2 {
			t.Fatalf("reloaded %v", set)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reload after a compacted watch")
	}
	// And it follows from there.
	if err := s.Revoke(ctx, "c", time.Now()); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case set := <-got:
			if _, ok := set["c"]; ok {
				return
			}
		case <-time.After(20 * time.Second):
			t.Fatal("later revocation not followed")
		}
	}
}

func TestManagerRegistry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newStore(t)
	if err := s.RegisterManager(ctx, "m1", "10.0.0.1:4242", 15); err != nil {
		t.Fatal(err)
	}
	list, rev, err := s.Managers(ctx, true)
	if err != nil || !slices.Equal(list, []store.ManagerAddr{{NodeID: "m1", Addr: "10.0.0.1:4242"}}) {
		t.Fatalf("managers %v, %v", list, err)
	}
	got := make(chan []store.ManagerAddr, 4)
	go s.FollowManagers(ctx, rev, func(l []store.ManagerAddr) { got <- l })
	if err := s.RegisterManager(ctx, "m2", "10.0.0.2:4242", 15); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if len(l) != 2 || l[1].NodeID != "m2" {
			t.Fatalf("followed %v", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("registration not followed")
	}
}
