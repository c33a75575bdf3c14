package store

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lockbox-project/lockbox/api/types"
)

// A node describes itself (hostname, platform, agent version, warnings).
// Placement constraints read the hostname and platform, and operators read
// all of it in `node ls` / `node inspect`, so what a node may say is
// bounded here, the one home of these rules: short, plain characters, and
// nothing a terminal would interpret.
const (
	// MaxHostnameLength is DNS's limit on a full name.
	MaxHostnameLength = 253
	// MaxPlatformLength bounds os and architecture ("linux", "arm64").
	MaxPlatformLength = 32
	// MaxAgentVersionLength bounds the agent version string.
	MaxAgentVersionLength = 64
	// MaxNodeWarnings and MaxNodeWarningLength bound the warnings a node
	// reports (Windows reports one about BitLocker, with a path in it).
	MaxNodeWarnings      = 8
	MaxNodeWarningLength = 1024
)

// ValidateNodeDescription checks every field of d against the rules above.
// A nil description, and empty fields, are valid: such a node matches no
// hostname or platform constraint. The error wraps ErrInvalid and quotes
// the offending value safely (escaped, truncated), so it can be shown.
func ValidateNodeDescription(d *types.NodeDescription) error {
	if err := ValidatePlacementDescription(d); err != nil {
		return err
	}
	if v := d.GetAgentVersion(); v != "" {
		if len(v) > MaxAgentVersionLength || !allRunes(v, isVersionRune) {
			return errorf(ErrInvalid, "agent version %s is not valid: at most %d of A-Z a-z 0-9 . _ + ~ -", quoteShort(v), MaxAgentVersionLength)
		}
	}
	if len(d.GetWarnings()) > MaxNodeWarnings {
		return errorf(ErrInvalid, "a node may report at most %d warnings, not %d", MaxNodeWarnings, len(d.GetWarnings()))
	}
	for _, w := range d.GetWarnings() {
		if len(w) > MaxNodeWarningLength || !utf8.ValidString(w) || !allRunes(w, unicode.IsPrint) {
			return errorf(ErrInvalid, "node warning %s is not valid: at most %d bytes of printable text", quoteShort(w), MaxNodeWarningLength)
		}
	}
	return nil
}

// ValidatePlacementDescription checks only the fields placement reads:
// hostname and platform.
func ValidatePlacementDescription(d *types.NodeDescription) error {
	if h := d.GetHostname(); h != "" {
		// Letters, digits, '.', '-' and '_' (some hosts have one), first
		// character a letter or digit so a hostname never reads as a flag.
		if len(h) > MaxHostnameLength || !allRunes(h, isHostnameRune) || !isAlnum(rune(h[0])) {
			return errorf(ErrInvalid, "hostname %s is not valid: at most %d of A-Z a-z 0-9 . - _, starting with a letter or digit", quoteShort(h), MaxHostnameLength)
		}
	}
	p := d.GetPlatform()
	for _, f := range []struct{ name, v string }{{"os", p.GetOs()}, {"architecture", p.GetArchitecture()}} {
		if len(f.v) > MaxPlatformLength || !allRunes(f.v, isPlatformRune) {
			return errorf(ErrInvalid, "platform %s %s is not valid: at most %d of a-z 0-9 _ -", f.name, quoteShort(f.v), MaxPlatformLength)
		}
	}
	return nil
}

// SamePlacementDescription reports whether a and b agree on every field
// placement reads. Hostnames compare as DNS does, ignoring case (so do
// constraints).
func SamePlacementDescription(a, b *types.NodeDescription) bool {
	return strings.EqualFold(a.GetHostname(), b.GetHostname()) &&
		a.GetPlatform().GetOs() == b.GetPlatform().GetOs() &&
		a.GetPlatform().GetArchitecture() == b.GetPlatform().GetArchitecture()
}

func allRunes(s string, ok func(rune) bool) bool {
	for _, r := range s {
		if !ok(r) {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
}

func isHostnameRune(r rune) bool { return isAlnum(r) || r == '.' || r == '-' || r == '_' }

func isPlatformRune(r rune) bool {
	return ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r == '_' || r == '-'
}

func isVersionRune(r rune) bool {
	return isAlnum(r) || strings.ContainsRune("._+~-", r)
}

// quoteShort quotes s for a message: Go-escaped (no control character or
// escape sequence survives) and cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}
