package claim

import "testing"

func TestNeedsMountpoints(t *testing.T) {
	tests := []struct {
		name             string
		readonly, userns bool
		want             bool
	}{
		{"writable rootfs", false, false, false},
		{"read-only rootfs", true, false, true},
		{"user namespace", false, true, true},
		{"user namespace, read-only", true, true, true},
	}
	for _, tt := range tests {
		if got := NeedsMountpoints(tt.readonly, tt.userns); got != tt.want {
			t.Errorf("%s: NeedsMountpoints = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMountpointMounts(t *testing.T) {
	ms := MountpointMounts([]string{"/run/secrets/a", "/etc/app/cert.pem"})
	if len(ms) != 2 {
		t.Fatalf("got %d mounts, want 2", len(ms))
	}
	for i, want := range []string{"/run/secrets/a", "/etc/app/cert.pem"} {
		m := ms[i]
		if m.Destination != want || m.Type != "bind" || m.Source != MountpointSource {
			t.Errorf("mount %d = %+v", i, m)
		}
		ro := false
		for _, o := range m.Options {
			if o == "ro" {
				ro = true
			}
			if o == "rw" || o == "rbind" {
				t.Errorf("mount %d has option %q", i, o)
			}
		}
		if !ro {
			t.Errorf("mount %d is not read-only: %v", i, m.Options)
		}
	}
	ms[0].Options[0] = "changed"
	if MountpointMounts([]string{"/x"})[0].Options[0] != "bind" {
		t.Error("MountpointMounts shares its options")
	}
	if len(MountpointMounts(nil)) != 0 {
		t.Error("mounts for no target")
	}
}
