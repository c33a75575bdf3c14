package keys

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// KeyringStore keeps the cluster's wrapped keyring for a Manager
// (manager/store's Store.Keyring implements it). Versions are the
// record's revision: they grow with every write. keys never talks to etcd
// itself.
type KeyringStore interface {
	// GetKeyring returns the wrapped keyring and its version; found is
	// false when the cluster has none.
	GetKeyring(ctx context.Context) (wrapped []byte, version int64, found bool, err error)
	// CreateKeyring stores wrapped only if no keyring exists.
	CreateKeyring(ctx context.Context, wrapped []byte) (version int64, created bool, err error)
	// SwapKeyring replaces the keyring if it is still at version.
	SwapKeyring(ctx context.Context, wrapped []byte, version int64) (newVersion int64, swapped bool, err error)
	// FollowKeyring calls changed after every write made after version,
	// and whenever its watch broke, until ctx ends.
	FollowKeyring(ctx context.Context, after int64, changed func(context.Context))
}

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
// the store current. It implements store.Sealer; while locked every seal
// and open fails with ErrLocked. Safe for concurrent use.
type Manager struct {
	ks KeyringStore

	mu   sync.RWMutex
	kek  *KEK
	ring *Keyring
	rev  int64 // mod revision of the wrapped ring we hold

	// onKEK hears every change of the KEK in use (see OnKEKChange).
	onKEK func(*KEK)
	// notifying is held from the install of a new KEK until onKEK has
	// heard it, taken under mu so that notifications keep install order.
	// A rotation whose ring this manager's own watch installed first
	// (installNewer finds it newer) waits on it for that notification: the
	// rotation must not answer before the key files are re-sealed under
	// the new unlock key. onKEK must not take mu.
	notifying sync.Mutex
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

// NewManager returns a locked Manager keeping the wrapped keyring in ks.
func NewManager(ks KeyringStore) *Manager {
	return &Manager{ks: ks}
}

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
	rev, created, err := m.ks.CreateKeyring(ctx, wrapped)
	if err != nil {
		ring.Close()
		return false, err
	}
	if !created {
		ring.Close()
		return false, m.Unlock(ctx, kek)
	}
	m.install(ring, cloneKEK(kek), rev)
	return true, nil
}

// install swaps in a new ring and KEK, zeroing what they replace.
func (m *Manager) install(ring *Keyring, kek *KEK, rev int64) {
	m.mu.Lock()
	oldRing, oldKEK := m.ring, m.kek
	m.ring, m.kek, m.rev = ring, kek, rev
	fresh := m.freshLocked(oldKEK, kek)
	m.mu.Unlock()
	m.zeroReplaced(oldRing, oldKEK, ring, kek)
	m.notifyFresh(fresh)
}

// freshLocked returns a copy of kek when it replaces another, and then
// holds notifying until notifyFresh has delivered it; nil otherwise. The
// caller holds mu.
func (m *Manager) freshLocked(oldKEK, kek *KEK) *KEK {
	if kek == nil || (oldKEK != nil && oldKEK.id() == kek.id()) {
		return nil
	}
	m.notifying.Lock()
	return cloneKEK(kek)
}

// waitNotified returns once no KEK installed before is still being
// delivered to onKEK.
func (m *Manager) waitNotified() {
	m.notifying.Lock()
	defer m.notifying.Unlock()
}

// notifyFresh delivers what freshLocked returned, outside mu.
func (m *Manager) notifyFresh(fresh *KEK) {
	if fresh == nil {
		return
	}
	defer m.notifying.Unlock()
	m.notifyKEK(fresh)
	fresh.Zero()
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
		// What installed the newer ring (a reload) may still be telling
		// onKEK of its KEK: wait for it.
		m.waitNotified()
		return
	}
	oldRing, oldKEK := m.ring, m.kek
	m.ring, m.kek, m.rev = ring, kek, rev
	fresh := m.freshLocked(oldKEK, kek)
	m.mu.Unlock()
	m.zeroReplaced(oldRing, oldKEK, ring, kek)
	m.notifyFresh(fresh)
}

func (m *Manager) zeroReplaced(oldRing *Keyring, oldKEK *KEK, ring *Keyring, kek *KEK) {
	if oldRing != nil && oldRing != ring {
		oldRing.Close()
	}
	if oldKEK != nil && oldKEK != kek {
		oldKEK.Zero()
	}
}

// Unlock reads the wrapped keyring from the store and opens it with kek
// (a copy is kept; the caller zeroes its own). ErrWrongKey when kek is not
// the cluster's current KEK.
func (m *Manager) Unlock(ctx context.Context, kek *KEK) error {
	wrapped, rev, found, err := m.ks.GetKeyring(ctx)
	if err != nil {
		return err
	}
	if !found {
		return ErrNoKeyring
	}
	// No forward here (see wrap): a rotated-out unlock key does not
	// unlock a restarted manager.
	ring, err := Unwrap(wrapped, kek)
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	m.install(ring, cloneKEK(kek), rev)
	return nil
}

// UnlockFollowing is Unlock for a KEK from a key file, which also follows
// the forward a KEK rotation left while this manager was down (no operator
// is there to give it the new key). The caller rewrites its key file when
// OnKEKChange reports a new KEK.
func (m *Manager) UnlockFollowing(ctx context.Context, kek *KEK) error {
	wrapped, ver, found, err := m.ks.GetKeyring(ctx)
	if err != nil {
		return err
	}
	if !found {
		return ErrNoKeyring
	}
	ring, used, err := unwrapFollow(wrapped, kek)
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	m.install(ring, used, ver)
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
	wrapped, ver, found, err := m.ks.GetKeyring(ctx)
	if err != nil {
		return err
	}
	if !found {
		return ErrNoKeyring
	}
	if _, fwd, err := splitWrapped(wrapped); err != nil || fwd == nil {
		return err
	}
	ring, kek, rev, err := m.current()
	if err != nil {
		return err
	}
	if rev != ver {
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
	wrapped, cur, found, err := m.ks.GetKeyring(ctx)
	if err != nil {
		kek.Zero()
		return fmt.Errorf("reload keyring: %w", err)
	}
	if !found {
		kek.Zero()
		return ErrNoKeyring
	}
	if cur == rev {
		kek.Zero()
		return nil
	}
	ring, used, err := unwrapFollow(wrapped, kek)
	kek.Zero()
	if err != nil {
		return fmt.Errorf("reload keyring: %w", err)
	}
	m.installNewer(ring, used, cur)
	return nil
}

// WatchKeyring reloads the keyring whenever another manager writes it,
// until ctx ends. Run it on every manager so all seal under the current
// DEK. It follows from the revision of the ring it holds, so a change made
// before the call is not missed, and reloads in full when its watch
// breaks. notify, if not nil, hears the outcome of every reload (nil on
// success; errors never hold key material).
func (m *Manager) WatchKeyring(ctx context.Context, notify func(error)) {
	m.mu.RLock()
	rev := m.rev
	m.mu.RUnlock()
	m.ks.FollowKeyring(ctx, rev, func(ctx context.Context) {
		err := m.Reload(ctx)
		if notify != nil && !errors.Is(err, ErrLocked) {
			notify(err)
		}
	})
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

// SealRecord implements store.Sealer: Keyring.SealRecord under the
// current ring.
func (m *Manager) SealRecord(plaintext, ad []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, ErrLocked
	}
	return m.ring.SealRecord(plaintext, ad)
}

// SealFenced implements store.KeyFence: SealRecord, plus the version of the
// keyring record sealed with. A write that compares that version commits
// only while no rotation has replaced the ring, so a value sealed under a
// key a rotation is about to drop is never stored.
func (m *Manager) SealFenced(plaintext, ad []byte) ([]byte, int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, 0, ErrLocked
	}
	sealed, err := m.ring.SealRecord(plaintext, ad)
	return sealed, m.rev, err
}

// Refresh implements store.KeyFence: it reloads the keyring.
func (m *Manager) Refresh(ctx context.Context) error { return m.Reload(ctx) }

// OpenRecord implements store.Sealer.
func (m *Manager) OpenRecord(sealed, ad []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return nil, ErrLocked
	}
	return m.ring.OpenRecord(sealed, ad)
}

// Seal is SealRecord for no record: see Keyring.Seal (manager/ca's
// values, until they are records of the store).
func (m *Manager) Seal(plaintext []byte) ([]byte, error) { return m.SealRecord(plaintext, nil) }

// Open is OpenRecord for no record: see Keyring.Seal.
func (m *Manager) Open(sealed []byte) ([]byte, error) { return m.OpenRecord(sealed, nil) }

// Digest implements store.Sealer.
func (m *Manager) Digest(plaintext []byte) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ring == nil {
		return ""
	}
	return m.ring.Digest(plaintext)
}

// NeedsReseal reports whether sealed is not under the current DEK or not
// in the current format (Keyring.NeedsReseal).
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
	newRev, swapped, err := m.ks.SwapKeyring(ctx, wrapped, rev)
	if err != nil {
		return err
	}
	if !swapped {
		return ErrConcurrentChange
	}
	m.installNewer(next, kek, newRev)
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
// example; manager/store's SealedValues covers values that are one sealed
// blob). A value no
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
