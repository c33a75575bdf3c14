package shimproxy

import (
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
)

func TestParseStartOutput(t *testing.T) {
	result := func(r *bootapi.BootstrapResult) []byte {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name        string
		out         []byte
		wantAddr    string
		wantVersion int32
		wantErr     string
	}{
		{name: "runc 2.x bootstrap result", out: result(&bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: "unix:///run/containerd/s/abc"}),
			wantAddr: "unix:///run/containerd/s/abc", wantVersion: 3},
		{name: "runhcs: a bare pipe address", out: []byte(`\\.\pipe\ProtectedPrefix\Administrators\containerd-shim-k8s.io-c1-pipe`),
			wantAddr: `\\.\pipe\ProtectedPrefix\Administrators\containerd-shim-k8s.io-c1-pipe`, wantVersion: 2},
		{name: "a bare unix address with a newline", out: []byte("unix:///run/containerd/s/abc\n"), wantAddr: "unix:///run/containerd/s/abc", wantVersion: 2},
		{name: "result without a version is version 2", out: result(&bootapi.BootstrapResult{Address: "unix:///x"}), wantAddr: "unix:///x", wantVersion: 2},
		{name: "grpc shim", out: result(&bootapi.BootstrapResult{Version: 3, Protocol: "grpc", Address: "unix:///x"}), wantErr: "speaks grpc"},
		{name: "unknown version", out: result(&bootapi.BootstrapResult{Version: 9, Address: "unix:///x"}), wantErr: "version 9"},
		{name: "nothing", out: nil, wantErr: "unexpected start output"},
		{name: "an error message", out: []byte("failed: no such bundle"), wantErr: "no such bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, v, err := parseStartOutput(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStartOutput = %q, %d, %v; want an error with %q", addr, v, err, tc.wantErr)
				}
				return
			}
			if err != nil || addr != tc.wantAddr || v != tc.wantVersion {
				t.Fatalf("parseStartOutput = %q, %d, %v; want %q, %d", addr, v, err, tc.wantAddr, tc.wantVersion)
			}
		})
	}
}

func TestGroupID(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"alone", nil, "c1"},
		{"CRI pod", map[string]string{"io.kubernetes.cri.sandbox-id": "pod1"}, "pod1"},
		{"runc group first", map[string]string{"io.kubernetes.cri.sandbox-id": "pod1", "io.containerd.runc.v2.group": "g"}, "g"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupID(writeBundle(t, tc.annotations), "c1"); got != tc.want {
				t.Errorf("groupID = %q, want %q", got, tc.want)
			}
		})
	}
	if got := groupID(tempDir(t), "c1"); got != "c1" {
		t.Errorf("groupID without a config = %q, want the ID", got)
	}
}
