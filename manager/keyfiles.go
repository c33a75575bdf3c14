package manager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/lockbox-project/lockbox/internal/atomicfile"
	"github.com/lockbox-project/lockbox/internal/secretmem"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/keys"
)

// The manager's own TLS files, under DATA/certs. One home for their names.
const (
	certsDir       = "certs"
	nodeCertFile   = "node.crt"
	nodeKeyFile    = "node.key"        // without autolock: PEM, 0600
	sealedKeyFile  = "node.key.sealed" // with autolock: keys.SealFile under the KEK
	rootCertFile   = "ca.crt"
	nodeKeyRole    = "manager node key" // the sealed file's role (bound into its seal)
	adminDir       = "admin"
	adminRootFile  = "ca.pem"
	adminCertFile  = "cert.pem"
	adminKeyFile   = "key.pem"
	etcdKeyPurpose = "lockbox-node-key" // the memfd's name, seen in /proc/PID/fd
)

// errKeyFilesLocked: the key files are sealed and no KEK opened them yet.
var errKeyFilesLocked = errors.New("this manager's key files are sealed (autolock): run 'lockbox unlock' with the cluster's unlock key")

// nodeKey is the manager's TLS private key (also its etcd peer key). It is
// held in locked memory; on disk it is certs/node.key without autolock
// (the KEK file beside it opens everything anyway) and certs/node.key.sealed
// under autolock, sealed by the KEK, never in clear. etcd reads its peer
// key by path at every handshake: under autolock that path is a memfd
// (Linux), which never reaches a disk.
type nodeKey struct {
	dir    string // DATA/certs
	sealed bool   // autolock

	mu   sync.Mutex
	kek  *keys.KEK         // autolock: the KEK the file is sealed under
	key  *secretmem.Buffer // the PEM key
	etcd *memFile          // autolock: etcd's view of the key
}

func newNodeKey(dataDir string, autolock bool) *nodeKey {
	return &nodeKey{dir: filepath.Join(dataDir, certsDir), sealed: autolock}
}

func (k *nodeKey) path(name string) string { return filepath.Join(k.dir, name) }

// open loads the key from disk; under autolock kek opens it
// (keys.ErrWrongKey when it is not the KEK the file was sealed under).
func (k *nodeKey) open(kek *keys.KEK) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var pemKey []byte
	if !k.sealed {
		b, err := os.ReadFile(k.path(nodeKeyFile))
		if err != nil {
			return fmt.Errorf("manager: load own key: %w", err)
		}
		pemKey = b
	} else {
		if kek == nil {
			return errKeyFilesLocked
		}
		sealed, err := os.ReadFile(k.path(sealedKeyFile))
		if os.IsNotExist(err) {
			// A data dir of a version that left the key in clear: it
			// is sealed (and the clear file removed) by reseal once the
			// keyring confirms the unlock key, never under a key that
			// may be mistyped.
			if pemKey, err = os.ReadFile(k.path(nodeKeyFile)); err != nil {
				return fmt.Errorf("manager: load own key: %w", err)
			}
			return k.holdLocked(pemKey)
		}
		if err != nil {
			return fmt.Errorf("manager: load own key: %w", err)
		}
		if pemKey, err = keys.OpenFile(kek, nodeKeyRole, sealed); err != nil {
			return err
		}
		k.setKEKLocked(kek)
	}
	return k.holdLocked(pemKey)
}

// holdLocked keeps pemKey (zeroing the caller's copy) in locked memory
// and, under autolock, in etcd's memfd.
func (k *nodeKey) holdLocked(pemKey []byte) error {
	if k.etcd != nil {
		if err := k.etcd.replace(pemKey); err != nil {
			secretmem.Zero(pemKey)
			return err
		}
	}
	buf, err := secretmem.Take(pemKey)
	if err != nil {
		return fmt.Errorf("manager: hold own key: %w", err)
	}
	if k.key != nil {
		k.key.Free()
	}
	k.key = buf
	return nil
}

// useKEK sets the KEK store seals with (a copy is kept), for a key that
// is new (init, join) rather than opened.
func (k *nodeKey) useKEK(kek *keys.KEK) {
	if !k.sealed {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.setKEKLocked(kek)
}

func (k *nodeKey) setKEKLocked(kek *keys.KEK) {
	if k.kek != nil {
		k.kek.Zero()
	}
	b := kek.Bytes()
	k.kek, _ = keys.KEKFromBytes(b)
	secretmem.Zero(b)
}

// store writes a new certificate and key (init, join, renewal) and keeps
// the key. Under autolock the key is sealed with the KEK set by open or
// reseal; the PEM is zeroed.
func (k *nodeKey) store(certPEM, keyPEM, rootPEM []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	defer secretmem.Zero(keyPEM)
	if k.sealed {
		if k.kek == nil {
			return errKeyFilesLocked
		}
		sealed, err := keys.SealFile(k.kek, nodeKeyRole, keyPEM)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(k.path(sealedKeyFile), sealed, 0o600); err != nil {
			return err
		}
		// A plain key left by an older version must not stay beside it.
		if err := os.Remove(k.path(nodeKeyFile)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("manager: remove the unsealed key: %w", err)
		}
	} else if err := atomicfile.WriteFile(k.path(nodeKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	for name, data := range map[string][]byte{nodeCertFile: certPEM, rootCertFile: rootPEM} {
		if err := atomicfile.WriteFile(k.path(name), data, 0o600); err != nil {
			return err
		}
	}
	return k.holdLocked(append([]byte(nil), keyPEM...))
}

// reseal re-seals the key file under kek when it is not already under it
// (an unlock-key rotation, or a clear key file left by an older version,
// which it removes). It takes ownership of kek.
func (k *nodeKey) reseal(kek *keys.KEK) error {
	defer kek.Zero()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.sealed || k.key == nil || (k.kek != nil && k.kek.ID() == kek.ID()) {
		return nil
	}
	var sealed []byte
	err := k.key.Use(func(pemKey []byte) (err error) {
		sealed, err = keys.SealFile(kek, nodeKeyRole, pemKey)
		return err
	})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(k.path(sealedKeyFile), sealed, 0o600); err != nil {
		return err
	}
	if err := os.Remove(k.path(nodeKeyFile)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("manager: remove the unsealed key: %w", err)
	}
	k.setKEKLocked(kek)
	return nil
}

// pair is the certificate on disk with the key in memory, for gRPC.
func (k *nodeKey) pair() (tls.Certificate, error) {
	certPEM, err := os.ReadFile(k.path(nodeCertFile))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("manager: load own certificate: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key == nil {
		return tls.Certificate{}, errKeyFilesLocked
	}
	var pair tls.Certificate
	err = k.key.Use(func(pemKey []byte) (err error) {
		pair, err = tls.X509KeyPair(certPEM, pemKey)
		return err
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("manager: load own certificate: %w", err)
	}
	return pair, nil
}

// etcdFiles names the embedded member's peer TLS files: under autolock
// the key is a memfd made from the key in memory.
func (k *nodeKey) etcdFiles() (*etcd.TLSFiles, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := k.path(nodeKeyFile)
	if k.sealed {
		if k.key == nil {
			return nil, errKeyFilesLocked
		}
		if k.etcd == nil {
			err := k.key.Use(func(pemKey []byte) (err error) {
				k.etcd, err = newMemFile(etcdKeyPurpose, pemKey)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		key = k.etcd.path()
	}
	return &etcd.TLSFiles{CertFile: k.path(nodeCertFile), KeyFile: key, CAFile: k.path(rootCertFile)}, nil
}

// close zeroes what is held.
func (k *nodeKey) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil {
		k.key.Free()
		k.key = nil
	}
	if k.kek != nil {
		k.kek.Zero()
		k.kek = nil
	}
	if k.etcd != nil {
		k.etcd.close()
		k.etcd = nil
	}
}
