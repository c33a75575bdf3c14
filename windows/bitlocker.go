package windows

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
)

// cimInvalidNamespace is NativeErrorCode.InvalidNamespace: the BitLocker
// WMI provider is not there because the feature is not installed.
const cimInvalidNamespace = 3

// encodePowerShell encodes a script for powershell.exe -EncodedCommand
// (base64 of UTF-16LE), which needs no quoting at all.
func encodePowerShell(script string) string {
	u := utf16.Encode([]rune(script))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c), byte(c>>8)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// parseBitLockerOutput reads what bitLockerScript printed (see
// bitlocker_windows.go): status=N with Win32_EncryptableVolume's
// ProtectionStatus (0 off, 1 on, 2 unknown: the volume is locked), absent
// when the volume is not an encryptable volume, or cimerror=N with WMI's
// NativeErrorCode. A volume is
// protected only when BitLocker protection is on: an encrypted volume with
// suspended protectors keeps its key in the clear on the disk.
func parseBitLockerOutput(out string) (protected bool, err error) {
	switch line := strings.TrimSpace(out); line {
	case "status=1":
		return true, nil
	case "status=0", "absent", "cimerror=" + strconv.Itoa(cimInvalidNamespace):
		return false, nil
	case "status=2":
		return false, fmt.Errorf("bitlocker: the volume is locked, its protection status is unknown")
	default:
		if code, ok := strings.CutPrefix(line, "cimerror="); ok && code != "" && strings.Trim(code, "0123456789") == "" {
			return false, fmt.Errorf("bitlocker: WMI query failed with native error code %s", code)
		}
		return false, fmt.Errorf("bitlocker: unexpected answer from the WMI query: %q", truncate(line, 200))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
