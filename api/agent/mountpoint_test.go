package agent

import "testing"

func TestMountPointFd(t *testing.T) {
	tests := []struct {
		m        *MountPoint
		nfds     int
		i        int
		handed   bool
		wantErr  bool
		attached bool
	}{
		{AttachedMount("/run/secrets"), 0, 0, false, false, true},
		{HandedOverMount("/run/secrets", 0), 1, 0, true, false, false},
		{HandedOverMount("/etc/x", 1), 2, 1, true, false, false},
		{HandedOverMount("/etc/x", 1), 1, 0, false, true, false},
		{&MountPoint{Target: "/x", FdIndex: -2}, 3, 0, false, true, false},
		{&MountPoint{Target: "/x"}, 0, 0, false, true, false}, // fd 0 of none
	}
	for _, tt := range tests {
		i, handed, err := tt.m.Fd(tt.nfds)
		if i != tt.i || handed != tt.handed || (err != nil) != tt.wantErr || tt.m.Attached() != tt.attached {
			t.Errorf("%v with %d fds: Fd = %d, %v, %v; Attached %v", tt.m, tt.nfds, i, handed, err, tt.m.Attached())
		}
		r := &PrepareResponse{Mounts: []*MountPoint{tt.m}}
		if (r.CheckFds(tt.nfds) != nil) != tt.wantErr || r.AllAttached() != tt.attached {
			t.Errorf("%v with %d fds: CheckFds %v, AllAttached %v", tt.m, tt.nfds, r.CheckFds(tt.nfds), r.AllAttached())
		}
	}
}
