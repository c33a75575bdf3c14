package windows

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	winapi "golang.org/x/sys/windows"

	"github.com/lockbox-project/lockbox/mounter"
)

// Mounter builds plans for Windows containers in a private directory under
// the agent's state directory.
type Mounter struct {
	root string // <state>\secrets
	sa   *winapi.SecurityAttributes

	mu sync.Mutex
	// live holds the tokens this Mounter built and has not wiped, so that
	// Recover never takes a directory from under a Build or an Attach in
	// progress.
	live map[string]bool
}

var _ mounter.Mounter = (*Mounter)(nil)

// New prepares stateDir\secrets, with an ACL that lets only Administrators
// and SYSTEM in, and returns a Mounter that builds plans there. Call
// Recover after New; it leaves alone what this Mounter builds.
func New(stateDir string) (*Mounter, error) {
	if !filepath.IsAbs(stateDir) {
		return nil, fmt.Errorf("windows mounter: state dir %q is not an absolute path", stateDir)
	}
	sa, err := privateAttributes()
	if err != nil {
		return nil, fmt.Errorf("windows mounter: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("windows mounter: %w", err)
	}
	root := filepath.Join(stateDir, secretsDirName)
	if err := ensurePrivateDir(root, sa); err != nil {
		return nil, fmt.Errorf("windows mounter: %w", err)
	}
	return &Mounter{root: root, sa: sa, live: make(map[string]bool)}, nil
}

// Build writes the plan's files into a new private directory. Nothing of
// it is visible to a container until the directory is mounted
// (Mount.Source, plugin/ocispec.WithSecretsMount) and Attach links the targets.
func (m *Mounter) Build(ctx context.Context, plan *mounter.Plan, src mounter.SecretSource) (mounter.Mount, error) {
	if err := checkPlan(plan); err != nil {
		return nil, fmt.Errorf("windows mounter: %w", err)
	}
	token, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("windows mounter: %w", err)
	}
	mt := &Mount{dir: filepath.Join(m.root, token), sa: m.sa, files: append([]mounter.File(nil), plan.Files...)}
	m.mu.Lock()
	m.live[token] = true
	m.mu.Unlock()
	mt.forget = func() {
		m.mu.Lock()
		delete(m.live, token)
		m.mu.Unlock()
	}
	if err := m.build(ctx, mt, src); err != nil {
		if werr := mt.Wipe(); werr != nil {
			err = errors.Join(err, fmt.Errorf("clean up %s: %w", mt.dir, werr))
		}
		return nil, fmt.Errorf("windows mounter: build: %w", err)
	}
	return mt, nil
}

func (m *Mounter) build(ctx context.Context, mt *Mount, src mounter.SecretSource) error {
	if err := mkdirPrivate(mt.dir, m.sa); err != nil {
		return err
	}
	if err := mkdirPrivate(mt.Source(), m.sa); err != nil {
		return err
	}
	for _, f := range mt.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.writeFile(filepath.Join(mt.Source(), f.Name), f, src); err != nil {
			return fmt.Errorf("secret %q: %w", f.SecretName, err)
		}
	}
	return nil
}

// writeFile copies one secret's bytes from the agent's locked memory into
// a new file, without any copy of its own.
func (m *Mounter) writeFile(path string, f mounter.File, src mounter.SecretSource) error {
	out, err := createSecretFile(path, m.sa)
	if err != nil {
		return err
	}
	werr := src.WithSecret(f.SecretID, func(data []byte) error {
		_, err := out.Write(data)
		return err
	})
	if err := out.Close(); werr == nil && err != nil {
		werr = err
	}
	return werr
}

// RecoverStore is Recover as a mounter.StoreRecoverer.
func (m *Mounter) RecoverStore(exists func(containerID string) (bool, error)) (map[string]mounter.Mount, error) {
	kept, err := m.Recover(exists)
	out := make(map[string]mounter.Mount, len(kept))
	for id, mnt := range kept {
		out[id] = mnt
		if mnt.Files() == nil {
			// Attached by an agent that kept no index: nothing says
			// which file is at which target, so it cannot be updated.
			out[id] = staticMount{mnt}
		}
	}
	return out, err
}

// staticMount is a recovered Mount that cannot be updated live: the agent
// then tells the operator to restart the container.
type staticMount struct{ mt *Mount }

func (s staticMount) Attach(ctx context.Context, c mounter.Container) error {
	return s.mt.Attach(ctx, c)
}
func (s staticMount) Wipe() error { return s.mt.Wipe() }

var _ mounter.StoreRecoverer = (*Mounter)(nil)

// Recover runs at agent start. For each directory Build left behind, it
// asks exists whether the container that owns it is still there: if not,
// or if no container ever owned it (the agent stopped between Build and
// Attach), the directory is wiped. The mounts of containers that still
// exist are returned by container ID, for the agent to wipe when they stop.
// When exists fails for a container its directory is kept and the error
// reported: a secret a running container reads is not pulled from under it.
func (m *Mounter) Recover(exists func(containerID string) (bool, error)) (map[string]*Mount, error) {
	entries, err := os.ReadDir(m.root)
	if err != nil {
		return nil, fmt.Errorf("windows mounter: recover: %w", err)
	}
	kept := make(map[string]*Mount)
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !tokenRE.MatchString(e.Name()) {
			continue // not ours; an operator's file is left alone
		}
		m.mu.Lock()
		live := m.live[e.Name()]
		m.mu.Unlock()
		if live {
			continue
		}
		mt := &Mount{dir: filepath.Join(m.root, e.Name()), sa: m.sa, recovered: true}
		id, err := mt.owner()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// An owner file cut short by a crash names no container.
		if checkContainerID(id) == nil {
			ok, err := exists(id)
			if err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", id, err))
				continue
			}
			if ok {
				// What a live update needs: the files the container
				// holds, and old files still to overwrite.
				mt.load()
				kept[id] = mt
				continue
			}
		}
		if err := mt.Wipe(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return kept, fmt.Errorf("windows mounter: recover: %w", err)
	}
	return kept, nil
}

// Mount is one built plan: a private directory of secret files.
type Mount struct {
	dir string
	sa  *winapi.SecurityAttributes // the private ACL, for a live update's new files
	// recovered mounts were found on disk by Recover: they can be wiped
	// and updated (their files are read back from the index), but not
	// attached again.
	recovered bool
	// forget tells the Mounter that built this mount that it is gone.
	forget func()

	mu    sync.Mutex
	wiped bool
	// files are what the container holds, by target; Name is the file's
	// name in Source(), which a live update keeps (the container's link
	// points at it). Nil for a recovered mount without an index.
	files []mounter.File
	// removed holds, by target, the names of the files a live update
	// removed: the container's links still name them.
	removed map[string]string
	// retired names, in dir, the old files a live update replaced or
	// removed, to be overwritten once no handle holds them (reclaim).
	retired      []string
	reclaimTimer *time.Timer
	reclaimTries int
}

var _ mounter.Mount = (*Mount)(nil)

// Source is the host directory to mount read-only into the container at
// mounter.WindowsInternalSecretsDir.
func (mt *Mount) Source() string { return filepath.Join(mt.dir, filesDirName) }

// Attach records which container owns the mount and makes each target a
// symbolic link to the secret's file in the internal directory, inside
// c.Rootfs (the container's C:\ as a host path, before it starts). Parent
// directories are created as needed; links the image holds on the way are
// followed as the container would follow them, but never out of its root.
// A target that exists as a file or directory in the image is refused; a
// link left there by an earlier start is replaced.
func (mt *Mount) Attach(ctx context.Context, c mounter.Container) error {
	if err := checkContainerID(c.ID); err != nil {
		return fmt.Errorf("windows mounter: attach: %w", err)
	}
	if !filepath.IsAbs(c.Rootfs) {
		return fmt.Errorf("windows mounter: attach %s: rootfs %q is not an absolute path", c.ID, c.Rootfs)
	}
	mt.mu.Lock()
	defer mt.mu.Unlock()
	switch {
	case mt.wiped:
		return fmt.Errorf("windows mounter: attach %s: the mount was wiped", c.ID)
	case mt.recovered:
		return fmt.Errorf("windows mounter: attach %s: a recovered mount cannot be attached again", c.ID)
	}
	if err := mt.setOwner(c.ID); err != nil {
		return fmt.Errorf("windows mounter: attach %s: %w", c.ID, err)
	}
	// Before the links: a restarted agent updates the container from it.
	if err := mt.writeIndex(); err != nil {
		return fmt.Errorf("windows mounter: attach %s: %w", c.ID, err)
	}
	for _, f := range mt.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := attachLink(c.Rootfs, f); err != nil {
			return fmt.Errorf("windows mounter: attach %s: secret %q at %s: %w", c.ID, f.SecretName, f.Target, err)
		}
	}
	return nil
}

// Wipe overwrites every file, then removes the directory. The links in the
// container's filesystem are left dangling: they hold no data, and the
// container's filesystem may already be gone. It is safe to call more than
// once.
func (mt *Mount) Wipe() error {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	if mt.wiped {
		return nil
	}
	if mt.reclaimTimer != nil {
		mt.reclaimTimer.Stop()
		mt.reclaimTimer = nil
	}
	if err := wipeTree(mt.dir); err != nil {
		return fmt.Errorf("windows mounter: wipe %s: %w", mt.dir, err)
	}
	mt.wiped = true
	if mt.forget != nil {
		mt.forget()
	}
	return nil
}

// setOwner writes the container's ID next to the files, once: a mount
// belongs to one container.
func (mt *Mount) setOwner(id string) error {
	cur, err := mt.owner()
	switch {
	case err != nil:
		return err
	case cur == id:
		return nil
	case cur != "":
		return fmt.Errorf("the mount belongs to container %s", cur)
	}
	f, err := os.OpenFile(filepath.Join(mt.dir, ownerFileName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(id)
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// owner reads the owning container's ID, or "" when Attach never ran.
func (mt *Mount) owner() (string, error) {
	b, err := os.ReadFile(filepath.Join(mt.dir, ownerFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// newToken names a new mount directory.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}
