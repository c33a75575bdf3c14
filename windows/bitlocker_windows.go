package windows

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	winapi "golang.org/x/sys/windows"
)

// bitLockerScript asks WMI for the BitLocker protection status of the
// volume whose device ID (\\?\Volume{GUID}\) is in $env:LOCKBOX_VOLUME.
// It prints one line a program can read whatever the system's language:
//
//	status=N     Win32_EncryptableVolume.ProtectionStatus: 0 off, 1 on,
//	             2 unknown (the volume is locked)
//	absent       the volume is not an encryptable volume
//	cimerror=N   WMI failed with this NativeErrorCode (3: no such
//	             namespace, that is, BitLocker is not installed)
//
// The device ID comes from the environment, not the script text, so no
// path ever needs quoting.
const bitLockerScript = `$ErrorActionPreference = 'Stop'
try {
  $v = Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -ClassName 'Win32_EncryptableVolume' |
    Where-Object { $_.DeviceID -eq $env:LOCKBOX_VOLUME } | Select-Object -First 1
} catch [Microsoft.Management.Infrastructure.CimException] {
  'cimerror=' + [int]$_.Exception.NativeErrorCode
  exit 0
}
if ($null -eq $v) { 'absent' } else { 'status=' + [int]$v.ProtectionStatus }
`

// BitLockerProtected reports whether the volume holding path is protected
// by BitLocker: encrypted, with its protectors active. The agent calls it
// at start for its state directory, where Windows secrets are written in
// clear: it warns (and reports in the node's status) when the answer is
// false, and refuses to start with --require-bitlocker.
//
// It asks WMI's Win32_EncryptableVolume class through PowerShell, which
// every Windows Server able to run containers has: the numeric
// ProtectionStatus reads the same in every language, unlike the text of
// manage-bde -status, and it needs no COM binding in the agent. It takes
// about a second, once. A machine without the BitLocker feature is not
// protected (false, nil). It needs an elevated caller, as the agent is.
func BitLockerProtected(ctx context.Context, path string) (bool, error) {
	vol, err := volumeID(path)
	if err != nil {
		return false, fmt.Errorf("bitlocker: %w", err)
	}
	sys, err := winapi.GetSystemDirectory()
	if err != nil {
		return false, fmt.Errorf("bitlocker: %w", err)
	}
	// An absolute path: PATH is not trusted to find PowerShell.
	ps := filepath.Join(sys, "WindowsPowerShell", "v1.0", "powershell.exe")
	cmd := exec.CommandContext(ctx, ps, "-NoLogo", "-NoProfile", "-NonInteractive",
		"-ExecutionPolicy", "Bypass", "-EncodedCommand", encodePowerShell(bitLockerScript))
	cmd.Env = append(os.Environ(), "LOCKBOX_VOLUME="+vol)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return false, fmt.Errorf("bitlocker: %s: %w: %s", ps, err, truncate(stderr.String(), 500))
	}
	return parseBitLockerOutput(stdout.String())
}

// volumeID returns the \\?\Volume{GUID}\ name of the volume holding path,
// the form Win32_EncryptableVolume.DeviceID has; it works for volumes
// mounted on a folder as well as on a drive letter.
func volumeID(path string) (string, error) {
	p, err := winapi.UTF16PtrFromString(path)
	if err != nil {
		return "", err
	}
	mount := make([]uint16, winapi.MAX_LONG_PATH)
	if err := winapi.GetVolumePathName(p, &mount[0], uint32(len(mount))); err != nil {
		return "", fmt.Errorf("volume of %s: %w", path, err)
	}
	name := make([]uint16, 64)
	if err := winapi.GetVolumeNameForVolumeMountPoint(&mount[0], &name[0], uint32(len(name))); err != nil {
		return "", fmt.Errorf("volume name of %s: %w", winapi.UTF16ToString(mount), err)
	}
	return winapi.UTF16ToString(name), nil
}
