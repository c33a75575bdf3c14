package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Resealer re-seals stored secret data for which needs is true with the
// Sealer's current key (manager/store.Store implements it).
type Resealer interface {
	Reseal(ctx context.Context, needs func(sealed []byte) bool) (int, error)
}

// ErrNoKeyring: the cluster has no keyring yet (Bootstrap was never run).
var ErrNoKeyring = errors.New("the cluster has no keyring yet")

// ErrConcurrentChange: another manager changed the keyring meanwhile; the
// caller reloads and retries.
var ErrConcurrentChange = errors.New("the keyring was changed by another manager; retry")

// Manager holds a manager's unlocked keyring and keeps the wrapped copy in
// etcd current. It implements store.Sealer; while locked every seal and
// open fails with ErrLocked. Safe for concurrent use.
type Manager struct {
	cli *clientv3.Client
	key string

	mu   sync.RWMutex
	kek  *KEK
	ring *Keyring
	rev  int64 // mod revision of the wrapped ring we hold

	// onKEK hears every change of the KEK in use (see OnKEKChange).
	onKEK func(*KEK)
}

// OnKEKChange sets fn to be called, outside the Manager's lock, with a copy
// of the KEK each time a new one is installed: at unlock and when an
// unlock-key rotation (here or on another manager) replaces it. The daemon
// re-seals its key files with it. fn owns (and zeroes) the copy. Set it
// before the first unlock.
func (m *Manager) OnKEKChange(fn func(*KEK)) { m.onKEK = fn }

func (m *Manager) notifyKEK(kek *KEK) {
	if m.onKEK != nil {
		m.onKEK(cloneKEK(kek))
	}
}

// NewManager returns a locked Manager keeping the wrapped keyring at
// prefix+"keys/keyring" (prefix as the store's, ending in "/").
func NewManager(cli *clientv3.Client, prefix string) *Manager {
	return &Manager{cli: cli, key: prefix + "keys/keyring"}
}

// Key is the etcd key of the wrapped keyring.
func (m *Manager) Key() string { return m.key }

// Bootstrap creates the cluster's keyring, wrapped under kek, unless one
// exists. unlockKey is the autolock unlock key kek was derived from, or ""
// without autolock. When a keyring exists it unlocks with kek instead, so
// two managers racing to initialise end up with the same keys. created
// says whether this call made the keyring.
func (m *Manager) Bootstrap(ctx context.Context, kek *KEK, unlockKey string) (created bool, err error) {
	ring, err := NewKeyring()
	if err != nil {
		return false, err
	}
	ring.unlockKey = unlockKey
	wrapped, err := Wrap(ring, kek)
	if err != nil {
		ring.Close()
		return false, err
	}
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(m.key), "=", 0)).
		Then(clientv3.OpPut(m.key, string(wrapped))).
		Commit()
	if err != nil {
		ring.Close()
		return false, fmt.Errorf("store keyring: %w", err)
	}
	if !resp.Succeeded {
		ring.Close()
		return false, m.Unlock(ctx, kek)
	}
	m.install(ring, cloneKEK(kek), resp.Header.Revision)
	return true, nil
}

// install swaps in a new ring and KEK, zeroing what they replace.
func (m *Manager) install(ring *Keyring, kek *KEK, rev int64) {
	m.mu.Lock()
	oldRing, oldKEK := m.ring, m.kek
	m.ring, m.kek, m.rev = ring, kek, rev
	var fresh *KEK
	if kek != nil && (oldKEK == nil || oldKEK.id() != kek.id()) {
		fresh = cloneKEK(kek)
	}
	m.mu.Unlock()
	m.zeroReplaced(oldRing, oldKEK, ring, kek)
	if fresh != nil {
		m.notifyKEK(fresh)
		fresh.Zero()
	}
}

// installNewer installs ring only if it is newer than the one in use and
// the manager is still unlocked: a slow reload must not undo a rotation
// that landed meanwhile, nor unlock a manager that was closed.
func (m *Manager) installNewer(ring *Keyring, kek *KEK, rev int64) {
	m.mu.Lock()
	if m.ring == nil || rev <= m.rev {
		m.mu.Unlock()
		ring.Close()
		kek.Zero()
		return
	}
	oldRing, oldKEK := m.ring, m.kek
	m.ring, m.kek, m.rev = ring, kek, rev
	var fresh *KEK
	if kek != nil && (oldKEK == nil || oldKEK.id() != kek.id()) {
		fresh = cloneKEK(kek)
	}
	m.mu.Unlock()
	m.zeroReplaced(oldRing, oldKEK, ring, kek)
	if fresh != nil {
		m.notifyKEK(fresh)
		fresh.Zero()
	}
}

func (m *Manager) zeroReplaced(oldRing *Keyring, oldKEK *KEK, ring *Keyring, kek *KEK) {
	if oldRing != nil && oldRing != ring {
		oldRing.Close()
	}
	if oldKEK != nil && oldKEK != kek {
		oldKEK.Zero()
	}
}

// Unlock reads the wrapped keyring from etcd and opens it with kek (a
// copy is kept; the caller zeroes its own). ErrWrongKey when kek is not
// the cluster's current KEK.
func (m *Manager) Unlock(ctx context.Context, kek *KEK) error {
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		return fmt.Errorf("read keyring: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return ErrNoKeyring
	}
	// No forward here (see wrap): a rotated-out unlock key does not
	// unlock a restarted manager.
	ring, err := Unwrap(resp.Kvs[0].Value, kek)
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	m.install(ring, cloneKEK(kek), resp.Kvs[0].ModRevision)
	return nil
}

// UnlockFollowing is Unlock for a KEK from a key file, which also follows
// the forward a KEK rotation left while this manager was down (no operator
// is there to give it the new key). The caller rewrites its key file when
// OnKEKChange reports a new KEK.
func (m *Manager) UnlockFollowing(ctx context.Context, kek *KEK) error {
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		return fmt.Errorf("read keyring: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return ErrNoKeyring
	}
	ring, used, err := unwrapFollow(resp.Kvs[0].Value, kek)
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	m.install(ring, used, resp.Kvs[0].ModRevision)
	return nil
}

// RotateKeyFileKEK replaces the KEK of a cluster without autolock with a
// fresh random one: every manager follows (through the forward) and
// rewrites its key file. ErrAutolock when the cluster has an unlock key.
func (m *Manager) RotateKeyFileKEK(ctx context.Context) error {
	if _, on, err := m.UnlockKey(); err != nil {
		return err
	} else if on {
		return ErrAutolock
	}
	kek, err := NewKEK()
	if err != nil {
		return err
	}
	defer kek.Zero()
	return m.RotateKEK(ctx, kek, "")
}

// DropForward rewrites the keyring without the forward a KEK or
// unlock-key rotation left (see wrap), so that the previous key no longer
// leads to the current one. It does nothing when there is no forward, or
// when the keyring changed meanwhile (every write drops the forward).
func (m *Manager) DropForward(ctx context.Context) error {
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		return fmt.Errorf("read keyring: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return ErrNoKeyring
	}
	if _, fwd, err := splitWrapped(resp.Kvs[0].Value); err != nil || fwd == nil {
		return err
	}
	ring, kek, rev, err := m.current()
	if err != nil {
		return err
	}
	if rev != resp.Kvs[0].ModRevision {
		ring.Close()
		kek.Zero()
		return nil
	}
	if err := m.write(ctx, ring, kek, rev); err != nil && !errors.Is(err, ErrConcurrentChange) {
		return fmt.Errorf("drop the keyring's forward: %w", err)
	}
	return nil
}

// ErrAutolock: the operation is for clusters without autolock.
var ErrAutolock = errors.New("autolock is on: rotate the unlock key instead ('lockbox unlock-key --rotate')")

// UnlockWithKey derives the KEK from an autolock unlock key and unlocks.
func (m *Manager) UnlockWithKey(ctx context.Context, unlockKey string) error {
	kek, err := KEKFromUnlockKey(unlockKey)
	if err != nil {
		return err
	}
	defer kek.Zero()
	return m.Unlock(ctx, kek)
}

// Locked reports whether the manager has no keyring to seal with.
func (m *Manager) Locked() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ring == nil
}

// Reload re-reads the wrapped keyring (after another manager rotated a
// key) and opens it with the KEK this manager holds, or through the
// forward an unlock-key rotation on another manager left (see wrap). A
// locked manager stays locked. If the KEK changed elsewhere and no forward
// leads to it, the ring in use is kept and ErrWrongKey returned.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.RLock()
	if m.kek == nil {
		m.mu.RUnlock()
		return ErrLocked
	}
	kek, rev := cloneKEK(m.kek), m.rev
	m.mu.RUnlock()
	resp, err := m.cli.Get(ctx, m.key)
	if err != nil {
		kek.Zero()
		return fmt.Errorf("reload keyring: %w", err)
	}
	if len(resp.Kvs) == 0 {
		kek.Zero()
		return ErrNoKeyring
	}
	if resp.Kvs[0].ModRevision == rev {
		kek.Zero()
		return nil
	}
	ring, used, err := unwrapFollow(resp.Kvs[0].Value, kek)
	kek.Zero()
	if err != nil {
		return fmt.Errorf("reload keyring: %w", err)
	}
	m.installNewer(ring, used, resp.Kvs[0].ModRevision)
	return nil
}

// WatchKeyring reloads the keyring whenever another manager writes it,
// until ctx ends. Run it on every manager so all seal under the current
// DEK. It watches from the revision of the ring it holds, so a change made
// before the call is not missed. notify, if not nil, hears the outcome of
// every reload (nil on success; errors never hold key material).
func (m *Manager) WatchKeyring(ctx context.Context, notify func(error)) {
	m.mu.RLock()
	rev := m.rev
	m.mu.RUnlock()
	opts := []clientv3.OpOption{}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	for wr := range m.cli.Watch(clientv3.WithRequireLeader(ctx), m.key, opts...) {
		err := wr.Err()
		if err == nil {
			err = m.Reload(ctx)
		}
		if notify != nil && !errors.Is(err, ErrLocked) {
			notify(err)
		}
	}
}

// current returns copies of the ring and KEK in use and the ring's
// revision; the caller owns (and zeroes) the copies.
func (m *Manager) current() (*Keyring, *KEK, int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, nil, 0, ErrLocked
	}
	return m.ring.clone(), cloneKEK(m.kek), m.rev, nil
}

// Seal, Open and Digest hold the read lock for the whole operation, so a
// rotation that swaps (and zeroes) the ring waits for them instead of
// pulling keys out from under them.

// Seal implements store.Sealer.
func (m *Manager) Seal(plaintext []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, ErrLocked
	}
	return m.ring.Seal(plaintext)
}

// SealFenced implements store.KeyFence: Seal, plus the keyring's etcd key
// and the mod revision of the ring sealed with. A write that compares that
// revision commits only while no rotation has replaced the ring, so a
// value sealed under a key a rotation is about to drop is never stored.
func (m *Manager) SealFenced(plaintext []byte) ([]byte, string, int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, "", 0, ErrLocked
	}
	sealed, err := m.ring.Seal(plaintext)
	return sealed, m.key, m.rev, err
}

// Refresh implements store.KeyFence: it reloads the keyring.
func (m *Manager) Refresh(ctx context.Context) error { return m.Reload(ctx) }

// Open implements store.Sealer.
func (m *Manager) Open(sealed []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, ErrLocked
	}
	return m.ring.Open(sealed)
}

// Digest implements store.Sealer.
func (m *Manager) Digest(plaintext []byte) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return ""
	}
	return m.ring.Digest(plaintext)
}

// NeedsReseal reports whether sealed is not under the current DEK.
func (m *Manager) NeedsReseal(sealed []byte) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ring != nil && m.ring.NeedsReseal(sealed)
}

// UnlockKey returns the cluster's autolock unlock key, or "" and false
// when autolock is off.
func (m *Manager) UnlockKey() (string, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return "", false, ErrLocked
	}
	m.ring.mu.RLock()
	defer m.ring.mu.RUnlock()
	return m.ring.unlockKey, m.ring.unlockKey != "", nil
}

// write stores next wrapped under kek if the keyring is still at rev, and
// installs it. It takes ownership of next and kek: on failure both are zeroed.
func (m *Manager) write(ctx context.Context, next *Keyring, kek *KEK, rev int64) (err error) {
	return m.writeForward(ctx, next, kek, nil, rev)
}

// writeForward is write, adding a forward from prev (see wrap) when set.
func (m *Manager) writeForward(ctx context.Context, next *Keyring, kek, prev *KEK, rev int64) (err error) {
	defer func() {
		if err != nil {
			next.Close()
			kek.Zero()
		}
	}()
	wrapped, err := wrap(next, kek, prev)
	if err != nil {
		return err
	}
	resp, err := m.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(m.key), "=", rev)).
		Then(clientv3.OpPut(m.key, string(wrapped))).
		Commit()
	if err != nil {
		return fmt.Errorf("store keyring: %w", err)
	}
	if !resp.Succeeded {
		return ErrConcurrentChange
	}
	m.installNewer(next, kek, resp.Header.Revision)
	return nil
}

// RotateKEK re-wraps the keyring under kek. unlockKey is the new autolock
// unlock key kek was derived from, or "" to turn autolock off (kek then
// comes from a key file every manager must receive). The DEKs do not
// change, so no secret is re-sealed.
func (m *Manager) RotateKEK(ctx context.Context, kek *KEK, unlockKey string) error {
	next, old, rev, err := m.current()
	if err != nil {
		return err
	}
	defer old.Zero()
	next.unlockKey = unlockKey
	// Other managers hold only the old KEK: they follow through the
	// forward (see wrap).
	if err := m.writeForward(ctx, next, cloneKEK(kek), old, rev); err != nil {
		next.Close()
		return fmt.Errorf("rotate key-encryption key: %w", err)
	}
	return nil
}

// RotateUnlockKey makes a new autolock unlock key, re-wraps the keyring
// under it and returns it, to print once to the operator.
func (m *Manager) RotateUnlockKey(ctx context.Context) (string, error) {
	key, err := NewUnlockKey()
	if err != nil {
		return "", err
	}
	kek, err := KEKFromUnlockKey(key)
	if err != nil {
		return "", err
	}
	defer kek.Zero()
	if err := m.RotateKEK(ctx, kek, key); err != nil {
		return "", err
	}
	return key, nil
}

// RotateDEK makes a new current data key, re-seals everything sealed
// under the old ones through rs, and drops the old keys. It returns how
// many values it re-sealed.
//
// rs must cover every value sealed with this Manager: the store's secrets
// and anything else (the CA key and join tokens of manager/ca, for
// example; RawValues covers values that are one sealed blob). A value no
// Resealer covers is unreadable once the old keys are dropped.
func (m *Manager) RotateDEK(ctx context.Context, rs ...Resealer) (int, error) {
	ring, kek, rev, err := m.current()
	if err != nil {
		return 0, err
	}
	next, err := ring.withNewDEK()
	ring.Close()
	if err != nil {
		kek.Zero()
		return 0, err
	}
	// Step 1: the new key becomes current everywhere before anything is
	// sealed with it, while the old keys stay to open what is not yet
	// re-sealed.
	if err := m.write(ctx, next, kek, rev); err != nil {
		next.Close()
		kek.Zero()
		return 0, fmt.Errorf("rotate data key: %w", err)
	}
	return m.FinishRotation(ctx, rs...)
}

// FinishRotation re-seals, through rs, every value not under the current
// DEK, then drops every other DEK. Run it after a crash left a keyring with
// several DEKs (RotateDEK's doc says what rs must cover); with one DEK it
// only re-seals what needs it.
func (m *Manager) FinishRotation(ctx context.Context, rs ...Resealer) (int, error) {
	total := 0
	// Repeat until a pass finds nothing: a manager that had not reloaded
	// the ring yet may have sealed under the old key during a pass.
	for {
		pass := 0
		for _, r := range rs {
			n, err := r.Reseal(ctx, m.NeedsReseal)
			pass += n
			if err != nil {
				return total + pass, fmt.Errorf("re-seal: %w", err)
			}
		}
		total += pass
		if pass == 0 {
			break
		}
	}
	ring, kek, rev, err := m.current()
	if err != nil {
		return total, err
	}
	defer ring.Close()
	if len(ring.KeyIDs()) == 1 {
		kek.Zero()
		return total, nil
	}
	next := ring.withoutOldDEKs()
	if err := m.write(ctx, next, kek, rev); err != nil {
		next.Close()
		kek.Zero()
		return total, fmt.Errorf("drop old data keys: %w", err)
	}
	return total, nil
}

// Close zeroes the keyring and KEK; the manager is locked afterwards.
func (m *Manager) Close() {
	m.install(nil, nil, 0)
}

// RawValues is a Resealer for etcd keys whose whole value is one sealed
// blob (manager/ca's join tokens, for example). Each rewrite compares the
// key's revision, so a concurrent writer wins and the next pass looks
// again.
func (m *Manager) RawValues(cli *clientv3.Client, keys ...string) Resealer {
	return rawResealer{m: m, cli: cli, keys: keys}
}

type rawResealer struct {
	m    *Manager
	cli  *clientv3.Client
	keys []string
}

func (r rawResealer) Reseal(ctx context.Context, needs func([]byte) bool) (int, error) {
	n := 0
	for _, key := range r.keys {
		resp, err := r.cli.Get(ctx, key)
		if err != nil {
			return n, fmt.Errorf("read %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 || !needs(resp.Kvs[0].Value) {
			continue
		}
		kv := resp.Kvs[0]
		plain, err := r.m.Open(kv.Value)
		if err != nil {
			return n, fmt.Errorf("open %s: %w", key, err)
		}
		sealed, err := r.m.Seal(plain)
		clear(plain)
		if err != nil {
			return n, fmt.Errorf("seal %s: %w", key, err)
		}
		tr, err := r.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
			Then(clientv3.OpPut(key, string(sealed))).Commit()
		if err != nil {
			return n, fmt.Errorf("write %s: %w", key, err)
		}
		if tr.Succeeded {
			n++
		}
	}
	return n, nil
}
