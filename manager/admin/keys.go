package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/manager/keys"
	"github.com/lockbox-project/lockbox/manager/store"
)

// KeyManager adapts the manager's keys.Manager, and the store whose
// secrets it seals, to Unlocker and DataKeyRotator.
type KeyManager struct {
	Keys  *keys.Manager
	Store *store.Store
	// Extra re-seal every other value sealed with Keys (the CA's key and
	// join tokens): without them those values become unreadable when a
	// data-key rotation drops the old key.
	Extra []keys.Resealer
}

var (
	_ Unlocker       = KeyManager{}
	_ DataKeyRotator = KeyManager{}
)

func (k KeyManager) Locked() bool { return k.Keys.Locked() }

func (k KeyManager) Unlock(ctx context.Context, unlockKey string) error {
	return k.Keys.UnlockWithKey(ctx, unlockKey)
}

func (k KeyManager) UnlockKey(ctx context.Context, rotate bool) (string, bool, error) {
	key, on, err := k.Keys.UnlockKey()
	if err != nil || !rotate {
		return key, on, err
	}
	if !on {
		return "", false, status.Error(codes.FailedPrecondition, "autolock is off: there is no unlock key to rotate")
	}
	key, err = k.Keys.RotateUnlockKey(ctx)
	return key, err == nil, err
}

// RotateKEK implements KEKRotator.
func (k KeyManager) RotateKEK(ctx context.Context) error {
	if err := k.Keys.RotateKeyFileKEK(ctx); errors.Is(err, keys.ErrAutolock) {
		return status.Error(codes.FailedPrecondition, err.Error())
	} else if err != nil {
		return err
	}
	return nil
}

// KEKRotator replaces the key-encryption key of a cluster without
// autolock; DataKeys implements it when it can.
type KEKRotator interface {
	RotateKEK(ctx context.Context) error
}

func (s *Server) RotateKeyEncryptionKey(ctx context.Context, _ *adminapi.RotateKeyEncryptionKeyRequest) (*adminapi.RotateKeyEncryptionKeyResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	r, ok := s.cfg.DataKeys.(KEKRotator)
	if !ok {
		return nil, unimplemented("key-encryption key rotation")
	}
	if err := r.RotateKEK(ctx); err != nil {
		return nil, toStatus(err)
	}
	s.record(ctx, store.AuditKEKRotate, "kek", "", "")
	return &adminapi.RotateKeyEncryptionKeyResponse{}, nil
}

func (k KeyManager) RotateDataKey(ctx context.Context) (int, error) {
	return k.Keys.RotateDEK(ctx, append([]keys.Resealer{k.Store}, k.Extra...)...)
}
