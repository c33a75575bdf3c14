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

func TestCollision(t *testing.T) {
	sa := Mount{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind", Source: "/var/lib/kubelet/x", Options: []string{"rbind", "ro"}}
	tests := []struct {
		name    string
		targets []string
		mounts  []Mount
		want    string
	}{
		{"beside the service-account volume", []string{"/run/secrets/db_pw", "/etc/app/cert.pem"}, []Mount{sa}, ""},
		{"in the service-account volume", []string{"/run/secrets/kubernetes.io/serviceaccount/token"}, []Mount{sa}, "/var/run/secrets/kubernetes.io/serviceaccount"},
		{"at a mount", []string{"/etc/hosts"}, []Mount{{Destination: "/etc/hosts", Type: "bind", Source: "/x/hosts", Options: []string{"rbind"}}}, "/etc/hosts"},
		{"at a tmpfs", []string{"/data"}, []Mount{{Destination: "/data/", Type: "tmpfs", Source: "tmpfs"}}, "/data/"},
		{"under a tmpfs (the runtime's /run)", []string{"/run/secrets/a"}, []Mount{{Destination: "/run", Type: "tmpfs", Source: "tmpfs"}}, ""},
		{"under a bind by option", []string{"/data/a"}, []Mount{{Destination: "/data", Type: "none", Source: "/srv", Options: []string{"rbind"}}}, "/data"},
		{"a sibling with a common prefix", []string{"/database/a"}, []Mount{{Destination: "/data", Type: "bind", Source: "/srv"}}, ""},
		{"Lockbox's own bind", []string{"/run/secrets/a"}, MountpointMounts([]string{"/run/secrets/a"}), ""},
		{"a bind of the root", []string{"/etc/a"}, []Mount{{Destination: "/", Type: "bind", Source: "/x"}}, ""},
	}
	for _, tt := range tests {
		_, m, ok := Collision(tt.targets, tt.mounts)
		if m != tt.want || ok != (tt.want != "") {
			t.Errorf("%s: Collision = %q, %v; want %q", tt.name, m, ok, tt.want)
		}
	}
}
