package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd/etcdtest"
)

type plainSealer struct{}

func (plainSealer) SealRecord(p, _ []byte) ([]byte, error) { return append([]byte("S:"), p...), nil }
func (plainSealer) OpenRecord(s, _ []byte) ([]byte, error) { return append([]byte(nil), s[2:]...), nil }
func (plainSealer) Digest([]byte) string                   { return "sha256:0" }

// checkConsistency asserts every invariant of the key layout at one
// revision: name indexes point at live objects and cover them all, every
// reference of every service names a live secret and has its refs/ key,
// and every refs/ key belongs to such a reference.
func checkConsistency(t *testing.T, s *Store) {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), s.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	kvs := map[string]string{}
	for _, kv := range resp.Kvs {
		kvs[strings.TrimPrefix(string(kv.Key), s.prefix)] = string(kv.Value)
	}
	secrets, services := map[string]*types.Secret{}, map[string]*types.Service{}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), s.prefix)
		switch {
		case strings.HasPrefix(k, "secrets/"):
			sec, err := decodeSecret(kv)
			if err != nil {
				t.Fatal(err)
			}
			secrets[sec.Id] = sec
			if kvs["names/secrets/"+sec.Spec.Name] != sec.Id {
				t.Errorf("secret %s: name index does not point at it", sec.Spec.Name)
			}
			if _, ok := kvs["secretdata/"+sec.Id]; !ok {
				t.Errorf("secret %s has no data", sec.Spec.Name)
			}
		case strings.HasPrefix(k, "services/"):
			svc, err := decodeService(kv)
			if err != nil {
				t.Fatal(err)
			}
			services[svc.Id] = svc
			if kvs["names/services/"+svc.Spec.Name] != svc.Id {
				t.Errorf("service %s: name index does not point at it", svc.Spec.Name)
			}
		}
	}
	for k, v := range kvs {
		switch {
		case strings.HasPrefix(k, "names/secrets/"):
			if secrets[v] == nil {
				t.Errorf("dangling secret name index %s", k)
			}
		case strings.HasPrefix(k, "names/services/"):
			if services[v] == nil {
				t.Errorf("dangling service name index %s", k)
			}
		case strings.HasPrefix(k, "secretdata/"):
			if secrets[strings.TrimPrefix(k, "secretdata/")] == nil {
				t.Errorf("data without a secret: %s", k)
			}
		case strings.HasPrefix(k, "refs/"):
			secID, svcID, _ := strings.Cut(strings.TrimPrefix(k, "refs/"), "/")
			svc := services[svcID]
			if svc == nil || !references(svc, secID) {
				t.Errorf("stale reference index %s", k)
			}
		}
	}
	for _, svc := range services {
		for _, r := range svc.Spec.Secrets {
			if secrets[r.SecretId] == nil {
				t.Errorf("service %s references missing secret %s", svc.Spec.Name, r.SecretName)
			}
			if _, ok := kvs["refs/"+r.SecretId+"/"+svc.Id]; !ok {
				t.Errorf("service %s: no index key for its reference to %s", svc.Spec.Name, r.SecretName)
			}
		}
	}
}

func references(svc *types.Service, secretID string) bool {
	for _, r := range svc.Spec.Secrets {
		if r.SecretId == secretID {
			return true
		}
	}
	return false
}

// TestRaceInvariants races every writer that touches references — service
// create, update (adding and dropping a reference), remove, and secret
// remove — and checks the whole layout after each round.
func TestRaceInvariants(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t)
	s := New(srv.Client(), plainSealer{})
	if _, err := s.CreateSecret(ctx, &types.SecretSpec{Name: "keep"}, []byte("k")); err != nil {
		t.Fatal(err)
	}
	ref := func(name string) *types.SecretReference {
		return &types.SecretReference{SecretName: name, Target: &types.FileTarget{Name: name}}
	}
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrUnknownSecret) || errors.Is(err, ErrInUse) ||
			errors.Is(err, ErrNotFound) || errors.Is(err, ErrVersionConflict)
	}
	const rounds = 25
	for i := range rounds {
		name := fmt.Sprintf("s%d", i)
		if _, err := s.CreateSecret(ctx, &types.SecretSpec{Name: name}, []byte("x")); err != nil {
			t.Fatal(err)
		}
		base, err := s.CreateService(ctx, &types.ServiceSpec{Name: fmt.Sprintf("base%d", i), Secrets: []*types.SecretReference{ref("keep")}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		run := func(f func() error) {
			wg.Go(func() {
				if err := f(); !allowed(err) {
					t.Error(err)
				}
			})
		}
		run(func() error {
			_, err := s.CreateService(ctx, &types.ServiceSpec{Name: fmt.Sprintf("new%d", i), Secrets: []*types.SecretReference{ref(name)}})
			return err
		})
		run(func() error {
			_, err := s.UpdateService(ctx, base.Id, base.Meta.Version, &types.ServiceSpec{Secrets: []*types.SecretReference{ref("keep"), ref(name)}})
			return err
		})
		run(func() error { return s.RemoveSecret(ctx, name) })
		run(func() error { return s.RemoveSecret(ctx, name) })
		if i%2 == 0 {
			run(func() error { return s.RemoveService(ctx, base.Id) })
		}
		wg.Wait()
		checkConsistency(t, s)
		if t.Failed() {
			t.Fatalf("round %d broke an invariant", i)
		}
	}
}
