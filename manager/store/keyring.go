package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// keyringKey holds the cluster's keyring wrapped by the key-encryption
// key (manager/keys' format; opaque here).
func (s *Store) keyringKey() string { return s.prefix + "keys/keyring" }

// KeyringRecord is the store's record of the wrapped keyring: manager/keys
// reads, writes and follows it through this (its KeyringStore), and never
// talks to etcd itself. Versions are the record's mod revision, the same
// revision a KeyFence seal reports.
type KeyringRecord struct{ s *Store }

// Keyring returns the wrapped-keyring record of this store.
func (s *Store) Keyring() *KeyringRecord { return &KeyringRecord{s: s} }

// GetKeyring returns the wrapped keyring and its version; found is false
// when the cluster has none yet.
func (k *KeyringRecord) GetKeyring(ctx context.Context) (wrapped []byte, version int64, found bool, err error) {
	resp, err := k.s.cli.Get(ctx, k.s.keyringKey())
	if err != nil {
		return nil, 0, false, fmt.Errorf("read keyring: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, false, nil
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, true, nil
}

// CreateKeyring stores wrapped only if no keyring exists; created is false
// (and nothing written) otherwise.
func (k *KeyringRecord) CreateKeyring(ctx context.Context, wrapped []byte) (version int64, created bool, err error) {
	key := k.s.keyringKey()
	resp, err := k.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(wrapped))).
		Commit()
	if err != nil {
		return 0, false, fmt.Errorf("store keyring: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// SwapKeyring replaces the keyring if it is still at version; swapped is
// false when another manager changed it meanwhile.
func (k *KeyringRecord) SwapKeyring(ctx context.Context, wrapped []byte, version int64) (newVersion int64, swapped bool, err error) {
	key := k.s.keyringKey()
	resp, err := k.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", version)).
		Then(clientv3.OpPut(key, string(wrapped))).
		Commit()
	if err != nil {
		return 0, false, fmt.Errorf("store keyring: %w", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// FollowKeyring calls changed after every write of the keyring made after
// version (0: from now), and again whenever the watch broke, until ctx
// ends.
func (k *KeyringRecord) FollowKeyring(ctx context.Context, after int64, changed func(context.Context)) {
	k.s.follow(ctx, k.s.keyringKey(), false, after, changed)
}
