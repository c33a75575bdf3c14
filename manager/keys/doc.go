// Package keys is the managers' envelope encryption: the data keys (DEKs)
// that seal every secret's data, and the key-encryption key (KEK) that
// wraps them.
//
// It holds the sealed-data format, the keyring (every DEK still needed, the
// current one, the key for keyed digests, and the autolock unlock key), its
// wrapping under a KEK, unlock keys, key files, and the rotations. It does
// not know the store's key layout, never
// logs or returns key material in errors, and zeroes keys it drops. It
// never talks to etcd: the wrapped keyring is read, swapped and followed
// through a KeyringStore (manager/store's Store.Keyring).
//
// # Formats
//
// Sealed data:  0x02 | key ID (uint32, big endian) | nonce (24) | secretbox under the record key
// Wrapped ring: 0x01 | KEK ID (8)                  | nonce (24) | secretbox(keyring)
//
//	0x02 | KEK ID | nonce | length | secretbox(keyring) | forward (see wrap)
//
// Sealed file:  0x01 | KEK ID (8)                  | nonce (24) | secretbox under HKDF(KEK, role)
//
// Sealed files are a manager's private keys under autolock (SealFile /
// OpenFile): the daemon keeps no key in clear on disk, and opens them with
// the KEK derived from the unlock key before it can start etcd.
//
// Every key the package holds (DEKs, digest key, KEKs) is in locked,
// non-dumpable memory (internal/secretmem) and zeroed when dropped.
//
// The record key is HMAC-SHA256(DEK, "lockbox seal v2\x00" || ad), ad naming
// the record the value belongs to (the store's key, "secretdata/<id>"):
// a value copied over another record does not open (seal.go says why this
// and not ad inside the plaintext). Version 0x01, sealed under the DEK
// itself and bound to nothing, is still opened, so older clusters keep
// working; NeedsReseal reports it, so the next data-key rotation
// (`lockbox data-key rotate`) rewrites it as 0x02 and, by dropping the old
// DEKs, leaves no 0x01 value that could be put back. Seal and Open (no
// ad) are for manager/ca's values until they become records of the store.
//
// Every seal draws a fresh random 24-byte nonce: XSalsa20's nonce is long
// enough that random nonces never collide in practice, so no counter has to
// be kept consistent between managers.
//
// # Where the keyring lives (the decision)
//
// The keyring lives in etcd, wrapped, in the store's keyring record, and
// only there. Managers of one cluster share their etcd data, so they must share
// the DEKs; keeping the one wrapped copy beside the data means a DEK
// rotation made by any manager is seen by all (WatchKeyring reloads it),
// and nothing has to be copied between data directories when keys change.
// What a manager needs locally is only the KEK:
//
//   - without autolock, a random 256-bit KEK in a 0600 key file in the
//     manager's data dir (CreateKeyFile / LoadKeyFile). A joining manager
//     receives that KEK (KEK.Bytes) over the mutually authenticated join
//     flow and writes it with WriteKeyFile; it then Unlocks from etcd.
//   - with autolock, no file: the KEK is derived from the operator's unlock
//     key (LBXKEY-1-...), which every manager of the cluster shares. A
//     joining or restarted manager stays locked until `lockbox unlock`.
//
// The unlock key is kept inside the wrapped keyring, so any unlocked
// manager can show it again (`lockbox unlock-key`), as swarm does.
//
// # KDF
//
// The unlock key is 256 bits from crypto/rand, not a password: a slow
// password KDF (scrypt, argon2) would add no security against guessing and
// only delay unlocks. HKDF-SHA256 (crypto/hkdf) is the right tool for
// turning a high-entropy secret into a key: it separates this use of the
// bytes from any other by its info string.
//
// # Rotations
//
// RotateUnlockKey / RotateKEK / RotateKeyFileKEK re-wrap the keyring under
// a new KEK (one compare-and-swap write) with a forward: the new unlock key
// (or, without autolock, the new KEK) sealed under the old KEK, so that
// every running manager follows (Reload) and hears the new KEK
// (OnKEKChange) to re-seal its key files or rewrite its kek file; a
// manager with a key file that was down follows at UnlockFollowing. A
// restarted autolocked manager never follows: a rotated-out unlock key
// does not unlock it. The forward lasts until the next keyring write or
// DropForward (the daemon calls it some minutes after a rotation).
// RotateDEK adds a new current DEK (written
// first), re-seals every sealed value under it through Resealers, and only
// then drops the old DEKs: a crash at any point leaves a keyring that opens
// everything, and FinishRotation completes the job.
//
// Every package that seals with the Manager must hand RotateDEK a Resealer
// for its values (the store for secrets; manager/ca for its key and
// tokens), or those values are lost when the old DEK is dropped. A
// Resealer writes the record-bound form (SealRecord with the record's
// AD), so a rotation also binds values sealed before binding existed.
package keys
