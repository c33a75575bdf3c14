package admin

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

func (k KeyManager) RotateDataKey(ctx context.Context) (int, error) {
	return k.Keys.RotateDEK(ctx, append([]keys.Resealer{k.Store}, k.Extra...)...)
}
