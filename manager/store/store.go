package store

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lockbox-project/lockbox/api/types"
)

// Sealer seals secret data before it is written and opens it after it is
// read. manager/keys implements it; the store never sees a key.
//
// ad (associated data) names the record a value belongs to: a value
// sealed with one ad opens only with the same ad, so a sealed value copied
// over another record's key in etcd fails to open instead of being served
// as that record. The store passes the record's key (recordAD).
type Sealer interface {
	// SealRecord returns a sealed copy of plaintext bound to ad. It must
	// not keep plaintext.
	SealRecord(plaintext, ad []byte) ([]byte, error)
	// OpenRecord returns the plaintext of sealed, which must have been
	// sealed with ad; the caller zeroes it when done.
	OpenRecord(sealed, ad []byte) ([]byte, error)
	// Digest is a keyed hash of plaintext ("sha256:<hex>"): it detects
	// changes without letting anyone test guesses of the data.
	Digest(plaintext []byte) string
}

// KeyFence is implemented by a Sealer whose keys live in this store's
// keyring record (manager/keys). The store then commits sealed data only
// while the key set it was sealed under is still current, so a data-key
// rotation that drops an old key can never strand data sealed under it by
// a write that was in flight (on this manager or on one that had not seen
// the rotation yet).
type KeyFence interface {
	// SealFenced is SealRecord plus the version of the keyring record (see
	// Store.Keyring) whose keys were used.
	SealFenced(plaintext, ad []byte) (sealed []byte, keyringVersion int64, err error)
	// Refresh re-reads the key set after a fence compare failed.
	Refresh(ctx context.Context) error
}

// maxFenceRetries bounds the re-seals of one write while rotations race it.
const maxFenceRetries = 5

// seal seals plaintext for record ad and returns the compares that must hold when the
// sealed bytes are written (none for an unfenced Sealer).
func (s *Store) seal(plaintext, ad []byte) ([]byte, []clientv3.Cmp, error) {
	f, ok := s.sealer.(KeyFence)
	if !ok {
		sealed, err := s.sealer.SealRecord(plaintext, ad)
		return sealed, nil, err
	}
	sealed, rev, err := f.SealFenced(plaintext, ad)
	if err != nil {
		return nil, nil, err
	}
	return sealed, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keyringKey()), "=", rev)}, nil
}

// refresh is called when a fenced write failed on its fence.
func (s *Store) refresh(ctx context.Context) error {
	if f, ok := s.sealer.(KeyFence); ok {
		if err := f.Refresh(ctx); err != nil {
			return fmt.Errorf("reload data keys: %w", err)
		}
	}
	return nil
}

// DefaultPrefix is where the store keeps its keys unless told otherwise.
const DefaultPrefix = "/lockbox/"

// Store is typed access to secrets, services and nodes in etcd. It is safe
// for concurrent use by many goroutines and by many managers at once.
type Store struct {
	cli    *clientv3.Client
	sealer Sealer
	prefix string
	now    func() time.Time
	// foldedIndexed caches that the folded name index was backfilled
	// (names.go); shared by the copies WithSealer makes. Creates still
	// compare the marker, so a store whose marker went (a restore of an
	// older backup) is backfilled again.
	foldedIndexed *atomic.Bool
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix keeps every key under prefix (which must end in "/") instead
// of DefaultPrefix; tests use it to share one etcd.
func WithPrefix(prefix string) Option { return func(s *Store) { s.prefix = prefix } }

// WithClock sets the clock used for created/updated times.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// New returns a Store on cli that seals secret data with sealer. sealer
// may be nil for a store used only for the cluster table, the keyring and
// the registry (a manager opens those before it has keys; WithSealer then
// gives the full store).
func New(cli *clientv3.Client, sealer Sealer, opts ...Option) *Store {
	s := &Store{cli: cli, sealer: sealer, prefix: DefaultPrefix, now: time.Now, foldedIndexed: new(atomic.Bool)}
	for _, o := range opts {
		o(s)
	}
	if !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	return s
}

// WithSealer returns a store on the same etcd and prefix that seals secret
// data with sealer.
func (s *Store) WithSealer(sealer Sealer) *Store {
	c := *s
	c.sealer = sealer
	return &c
}

// Close closes the etcd client the store was made with (a manager on an
// external etcd owns it; an embedded member closes its own).
func (s *Store) Close() error { return s.cli.Close() }

// Prefix is the key prefix every object lives under; see the package doc
// for the layout beneath it.
func (s *Store) Prefix() string { return s.prefix }

// Client is the etcd client the store uses. Tests and benchmarks use it
// to look at raw keys; code outside the store goes through typed methods.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Revision returns etcd's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"\x00", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// Key layout, see doc.go.
func (s *Store) secretKey(id string) string     { return s.prefix + "secrets/" + id }
func (s *Store) secretDataKey(id string) string { return s.prefix + "secretdata/" + id }
func (s *Store) serviceKey(id string) string    { return s.prefix + "services/" + id }
func (s *Store) nodeKey(id string) string       { return s.prefix + "nodes/" + id }
func (s *Store) nameKey(kind, name string) string {
	return s.prefix + "names/" + kind + "/" + name
}
func (s *Store) refKey(secretID, serviceID string) string {
	return s.prefix + "refs/" + secretID + "/" + serviceID
}
func (s *Store) refPrefix(secretID string) string { return s.prefix + "refs/" + secretID + "/" }

// validRef reports whether ref can be an ID or ID prefix: it must not be
// able to reach outside the object's key range.
func validRef(ref string) bool {
	return ref != "" && !strings.ContainsAny(ref, "/\x00")
}

func (s *Store) timestamp() *timestamppb.Timestamp { return timestamppb.New(s.now()) }

// marshal encodes an object with its version cleared: the version is the
// key's mod revision and is filled in on read.
func marshal(m proto.Message, meta *types.Meta) ([]byte, error) {
	var v uint64
	if meta != nil {
		v, meta.Version = meta.Version, 0
		defer func() { meta.Version = v }()
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode object: %w", err)
	}
	return b, nil
}
