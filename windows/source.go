package windows

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MountSource returns the host directory to mount read-only at
// mounter.WindowsInternalSecretsDir for container containerID: the files
// directory of the one mount under stateDir that Attach marked as the
// container's. A runtime adapter that must put the mount in the spec
// before the container is created (the proxy shim, plugin/shimproxy) asks
// the agent to prepare first, then finds the directory here; the agent's
// local API carries no host path. It needs to read stateDir\secrets, which
// only Administrators and SYSTEM can (containerd and its shims run as
// SYSTEM).
//
// It fails when no mount, or more than one, names the container: the
// adapter then fails the container rather than guess.
func MountSource(stateDir, containerID string) (string, error) {
	if err := checkContainerID(containerID); err != nil {
		return "", err
	}
	root := filepath.Join(stateDir, secretsDirName)
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("secrets directory of container %s: %w", containerID, err)
	}
	var found []string
	for _, e := range entries {
		if !e.IsDir() || !tokenRE.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		owner, err := os.ReadFile(filepath.Join(dir, ownerFileName))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && string(owner) != containerID) {
			continue // not attached yet, or another container's
		}
		if err != nil {
			return "", fmt.Errorf("secrets directory of container %s: %w", containerID, err)
		}
		found = append(found, filepath.Join(dir, filesDirName))
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("the agent holds no secrets directory for container %s under %s", containerID, root)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d secrets directories under %s name container %s; refusing to guess", len(found), root, containerID)
}
