package claim

import "testing"

func TestNeedsPlaceholder(t *testing.T) {
	tests := []struct {
		name             string
		readonly, userns bool
		mounts           []string
		want             bool
	}{
		{"writable rootfs", false, false, nil, false},
		{"writable rootfs, mount above", false, false, []string{"/run"}, false},
		{"read-only rootfs", true, false, []string{"/proc", "/dev"}, true},
		{"read-only rootfs, mount at the dir", true, false, []string{"/run/secrets"}, false},
		{"read-only rootfs, mount at the dir, unclean", true, false, []string{"/run/secrets/"}, false},
		{"read-only rootfs, mount above", true, false, []string{"/run"}, false},
		{"read-only rootfs, root mount only", true, false, []string{"/"}, true},
		{"read-only rootfs, mount below", true, false, []string{"/run/secrets/x"}, true},
		{"read-only rootfs, sibling with a common prefix", true, false, []string{"/run/sec"}, true},
		{"user namespace", false, true, nil, true},
		{"user namespace, mount above (runc's /run)", false, true, []string{"/run"}, true},
		{"user namespace, mount at the dir", false, true, []string{"/run/secrets"}, false},
		{"user namespace, read-only, mount above", true, true, []string{"/run"}, true},
	}
	for _, tt := range tests {
		if got := NeedsPlaceholder(tt.readonly, tt.userns, tt.mounts); got != tt.want {
			t.Errorf("%s: NeedsPlaceholder = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPlaceholderOptionsAreFresh(t *testing.T) {
	a := PlaceholderOptions()
	a[0] = "changed"
	if PlaceholderOptions()[0] != "nosuid" {
		t.Error("PlaceholderOptions shares its slice")
	}
}
