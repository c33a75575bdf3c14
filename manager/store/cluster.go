package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The cluster table: what every manager shares besides secrets, services
// and nodes. Values that must stay secret (the CA key, the join token
// secrets) arrive sealed by the caller (manager/ca with the data key);
// the store never sees them in clear. Key layout in doc.go.
func (s *Store) clusterIDKey() string   { return s.prefix + "cluster/id" }
func (s *Store) caRootKey() string      { return s.prefix + "cluster/ca/root" }
func (s *Store) joinTokensKey() string  { return s.prefix + "cluster/ca/tokens" }
func (s *Store) crlKey() string         { return s.prefix + "cluster/ca/crl" }
func (s *Store) revokedPrefix() string  { return s.prefix + "cluster/revoked/" }
func (s *Store) certsPrefix() string    { return s.prefix + "cluster/certs/" }
func (s *Store) managersPrefix() string { return s.prefix + "cluster/managers/" }
func (s *Store) certKey(node, serial string) string {
	return s.certsPrefix() + node + "/" + serial
}

// CARoot is the cluster's root CA as stored: the certificate, and its
// private key sealed by the data key.
type CARoot struct {
	CertPEM   []byte `json:"cert_pem"`
	SealedKey []byte `json:"sealed_key"`
	// KeyBound says SealedKey is sealed with CAKeyAD. It is false (absent)
	// only on roots stored before sealed values were bound to their
	// record, whose key was sealed with an empty AD: the caller opens
	// those that way once and writes them back bound.
	KeyBound bool `json:"key_bound,omitempty"`
}

// SealedJoinTokens are the join token secrets as stored: sealed by the
// caller with JoinTokensAD(Generation).
type SealedJoinTokens struct {
	// Generation grows by one at every write (a rotation, a reseal). It
	// is part of the AD, so a sealed value of an earlier generation put
	// back into the record with a raw etcd write does not open: a
	// rotated-out token cannot be revived that way. 0 is a value stored
	// before tokens were bound (raw sealed bytes, empty AD).
	Generation uint64 `json:"generation"`
	Sealed     []byte `json:"sealed"`
}

// Bound reports whether t is sealed with JoinTokensAD(t.Generation);
// false for a value stored before sealed values were bound.
func (t SealedJoinTokens) Bound() bool { return t.Generation > 0 }

// CAKeyAD is the associated data that binds the sealed CA key to the
// root record ("cluster/ca/root", like recordAD of secret data).
func (s *Store) CAKeyAD() []byte { return s.recordAD(s.caRootKey()) }

// JoinTokensAD is the associated data that binds sealed join tokens to the
// tokens record and to one generation of it: "cluster/ca/tokens", a NUL
// (no key holds one, so no other record's AD can equal it) and the
// generation in decimal.
func (s *Store) JoinTokensAD(generation uint64) []byte {
	return strconv.AppendUint(append(s.recordAD(s.joinTokensKey()), 0), generation, 10)
}

func encodeJoinTokens(t SealedJoinTokens) ([]byte, error) {
	if !t.Bound() {
		return nil, errorf(ErrInvalid, "join tokens: generation 0 is only read, never written")
	}
	return json.Marshal(t)
}

// decodeJoinTokens reads the tokens record: JSON, or the raw sealed bytes
// stored before tokens were bound (a sealed value starts with its format
// byte, 0x01 or 0x02, never with '{').
func decodeJoinTokens(val []byte) (SealedJoinTokens, error) {
	if len(val) == 0 || val[0] != '{' {
		return SealedJoinTokens{Sealed: val}, nil
	}
	var t SealedJoinTokens
	if err := json.Unmarshal(val, &t); err != nil {
		return SealedJoinTokens{}, fmt.Errorf("decode join tokens: %w", err)
	}
	return t, nil
}

// ClusterInit is the state a new cluster starts with.
type ClusterInit struct {
	ID   string
	Root CARoot
	// JoinTokens are the join token secrets, sealed by the caller.
	JoinTokens SealedJoinTokens
	// CRL is the (empty) certificate revocation list, DER, signed by the
	// root.
	CRL []byte
}

// Cluster is the cluster table as read at one revision.
type Cluster struct {
	ID          string
	Root        CARoot
	RootVersion int64
	// Revoked holds the IDs of every revoked node.
	Revoked  map[string]struct{}
	Revision int64
}

// InitCluster writes a new cluster's state, only if etcd holds none: it
// fails with ErrExists otherwise.
func (s *Store) InitCluster(ctx context.Context, c ClusterInit) error {
	if c.ID == "" {
		return errorf(ErrInvalid, "init cluster: empty cluster ID")
	}
	root, err := json.Marshal(c.Root)
	if err != nil {
		return err
	}
	toks, err := encodeJoinTokens(c.JoinTokens)
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.clusterIDKey()), "=", 0)).
		Then(
			clientv3.OpPut(s.clusterIDKey(), c.ID),
			clientv3.OpPut(s.caRootKey(), string(root)),
			clientv3.OpPut(s.joinTokensKey(), string(toks)),
			clientv3.OpPut(s.crlKey(), string(c.CRL)),
		).Commit()
	if err != nil {
		return fmt.Errorf("store cluster state: %w", err)
	}
	if !resp.Succeeded {
		return errorf(ErrExists, "a cluster is already initialised in this etcd")
	}
	return nil
}

// GetCluster reads the cluster ID, the root CA and the revoked nodes at
// one revision; ErrNotFound before InitCluster.
func (s *Store) GetCluster(ctx context.Context) (*Cluster, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.clusterIDKey()),
		clientv3.OpGet(s.caRootKey()),
		clientv3.OpGet(s.revokedPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	ids, roots := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(ids) == 0 || len(roots) == 0 {
		return nil, errorf(ErrNotFound, "the cluster is not initialised")
	}
	c := &Cluster{ID: string(ids[0].Value), RootVersion: roots[0].ModRevision, Revision: resp.Header.Revision}
	if err := json.Unmarshal(roots[0].Value, &c.Root); err != nil {
		return nil, fmt.Errorf("decode root CA: %w", err)
	}
	c.Revoked = s.revokedSet(resp.Responses[2].GetResponseRange().Kvs)
	return c, nil
}

// SwapCARoot replaces the stored root if it is still at version; false
// when another manager changed it meanwhile.
func (s *Store) SwapCARoot(ctx context.Context, root CARoot, version int64) (bool, error) {
	val, err := json.Marshal(root)
	if err != nil {
		return false, err
	}
	return s.swap(ctx, s.caRootKey(), val, version)
}

// JoinTokens returns the sealed join token secrets and their version.
func (s *Store) JoinTokens(ctx context.Context) (SealedJoinTokens, int64, error) {
	val, version, err := s.getValue(ctx, s.joinTokensKey(), "join tokens")
	if err != nil {
		return SealedJoinTokens{}, 0, err
	}
	t, err := decodeJoinTokens(val)
	return t, version, err
}

// SwapJoinTokens replaces the sealed join tokens if they are still at
// version; false when another manager changed them meanwhile. t must be
// bound (Generation > 0).
func (s *Store) SwapJoinTokens(ctx context.Context, t SealedJoinTokens, version int64) (bool, error) {
	val, err := encodeJoinTokens(t)
	if err != nil {
		return false, err
	}
	return s.swap(ctx, s.joinTokensKey(), val, version)
}

// CRL returns the certificate revocation list (DER) and its version;
// ErrNotFound on a cluster initialised before CRLs were kept.
func (s *Store) CRL(ctx context.Context) (der []byte, version int64, err error) {
	return s.getValue(ctx, s.crlKey(), "certificate revocation list")
}

// SwapCRL replaces the CRL if it is still at version (0: only if there is
// none); false when another manager changed it meanwhile.
func (s *Store) SwapCRL(ctx context.Context, der []byte, version int64) (bool, error) {
	return s.swap(ctx, s.crlKey(), der, version)
}

// FollowCRL calls fn with the CRL after every change made after revision
// after, and again in full whenever the watch broke, until ctx ends.
func (s *Store) FollowCRL(ctx context.Context, after int64, fn func(der []byte)) {
	s.follow(ctx, s.crlKey(), false, after, func(ctx context.Context) {
		if der, _, err := s.CRL(ctx); err == nil {
			fn(der)
		}
	})
}

// Revoke records nodeID as revoked at time at. From then on no
// certificate can be recorded for it (RecordCertificate fails).
func (s *Store) Revoke(ctx context.Context, nodeID string, at time.Time) error {
	if !validRef(nodeID) {
		return errorf(ErrInvalid, "revoke: invalid node ID %q", nodeID)
	}
	if _, err := s.cli.Put(ctx, s.revokedPrefix()+nodeID, at.UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("revoke node %s: %w", nodeID, err)
	}
	return nil
}

// Revoked returns the IDs of every revoked node and the revision read at.
func (s *Store) Revoked(ctx context.Context) (map[string]struct{}, int64, error) {
	resp, err := s.cli.Get(ctx, s.revokedPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("read revocations: %w", err)
	}
	return s.revokedSet(resp.Kvs), resp.Header.Revision, nil
}

// FollowRevocations calls fn with every revoked node ID after each
// revocation made after revision after, and again in full whenever the
// watch broke, until ctx ends.
func (s *Store) FollowRevocations(ctx context.Context, after int64, fn func(revoked map[string]struct{})) {
	s.follow(ctx, s.revokedPrefix(), true, after, func(ctx context.Context) {
		if set, _, err := s.Revoked(ctx); err == nil {
			fn(set)
		}
	})
}

// IssuedCert is what the store keeps of a certificate issued to a node:
// enough to list it in the etcd peers' CRL once the node is revoked.
type IssuedCert struct {
	// Serial is the certificate's serial number, in hex.
	Serial string
	// NotAfter is when it expires; the CRL drops it after that (TLS
	// refuses it anyway). Zero: unknown, listed while its node is revoked.
	NotAfter time.Time
	// Peer says the certificate can reach an etcd peer port (a manager
	// certificate: etcd requires the manager name). Only those are listed:
	// a worker's removal then leaves the CRL, and the peers' connections,
	// alone, and the CRL does not grow with every worker ever removed.
	Peer bool
}

// issuedRecord is the value at cluster/certs/<node>/<serial>. Records
// written before it existed hold only the RFC 3339 time of issue: they
// read as Peer with no expiry, so they stay listed.
type issuedRecord struct {
	Issued   time.Time `json:"issued"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Peer     bool      `json:"peer,omitempty"`
}

// RecordCertificate notes a certificate issued to nodeID, so that revoking
// the node can list every certificate it ever held. It fails with
// ErrRevoked when the node is revoked: in the same transaction, so a
// certificate signed while a revocation lands is either recorded before
// it (and listed by the CRL built after it) or refused.
func (s *Store) RecordCertificate(ctx context.Context, nodeID string, c IssuedCert) error {
	if !validRef(nodeID) || !validRef(c.Serial) {
		return errorf(ErrInvalid, "record certificate: invalid node ID %q or serial %q", nodeID, c.Serial)
	}
	val, err := json.Marshal(issuedRecord{Issued: s.now().UTC(), NotAfter: c.NotAfter.UTC(), Peer: c.Peer})
	if err != nil {
		return err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.revokedPrefix()+nodeID), "=", 0)).
		Then(clientv3.OpPut(s.certKey(nodeID, c.Serial), string(val))).
		Commit()
	if err != nil {
		return fmt.Errorf("record certificate of node %s: %w", nodeID, err)
	}
	if !resp.Succeeded {
		return errorf(ErrRevoked, "node %s is revoked", nodeID)
	}
	return nil
}

// RevokedSerials returns the serials (hex, sorted) the etcd peers' CRL
// must list: every certificate recorded for a revoked node that can reach
// a peer port and has not expired; and the revision read at.
func (s *Store) RevokedSerials(ctx context.Context) ([]string, int64, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.revokedPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.certsPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("read revoked certificates: %w", err)
	}
	revoked := s.revokedSet(resp.Responses[0].GetResponseRange().Kvs)
	now := s.now()
	var serials []string
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		node, serial, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.certsPrefix()), "/")
		if _, gone := revoked[node]; !ok || !gone {
			continue
		}
		if rec, err := decodeIssued(kv.Value); err == nil && (!rec.Peer || (!rec.NotAfter.IsZero() && rec.NotAfter.Before(now))) {
			continue
		}
		serials = append(serials, serial)
	}
	sort.Strings(serials)
	return serials, resp.Header.Revision, nil
}

// decodeIssued reads a cluster/certs value; an older plain-time value is
// a peer certificate of unknown expiry (listed, to be safe).
func decodeIssued(val []byte) (issuedRecord, error) {
	if len(val) == 0 || val[0] != '{' {
		return issuedRecord{Peer: true}, nil
	}
	var r issuedRecord
	err := json.Unmarshal(val, &r)
	return r, err
}

func (s *Store) revokedSet(kvs []*mvccpb.KeyValue) map[string]struct{} {
	set := make(map[string]struct{}, len(kvs))
	for _, kv := range kvs {
		set[strings.TrimPrefix(string(kv.Key), s.revokedPrefix())] = struct{}{}
	}
	return set
}

// getValue reads one key of the cluster table.
func (s *Store) getValue(ctx context.Context, key, what string) ([]byte, int64, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", what, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, errorf(ErrNotFound, "no %s in the store", what)
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// swap writes val at key if the key is still at version (0: absent).
func (s *Store) swap(ctx context.Context, key string, val []byte, version int64) (bool, error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", version)).
		Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return false, fmt.Errorf("write %s: %w", strings.TrimPrefix(key, s.prefix), err)
	}
	return resp.Succeeded, nil
}
