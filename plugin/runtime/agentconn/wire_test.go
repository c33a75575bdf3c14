package agentconn

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
)

// The hand encoding must be what proto.Marshal writes for the same
// api/agent message: byte for byte, so that nothing depends on the agent's
// decoder being lenient.
func TestEncodeMatchesProto(t *testing.T) {
	tests := []struct {
		name   string
		ctr    Container
		attach bool
		want   *agent.Container
	}{
		{"empty", Container{}, false, &agent.Container{}},
		{"attach", Container{ID: "c1", Service: "web", Pid: 4242, Rootfs: "/", OS: "linux"}, true,
			&agent.Container{Id: "c1", Service: "web", Pid: 4242, Rootfs: "/", Os: "linux"}},
		{"hook pid 1, read-only", Container{ID: "c", Service: "s", Pid: 1, Rootfs: "/b/rootfs", ReadonlyRootfs: true}, false,
			&agent.Container{Id: "c", Service: "s", Pid: 1, Rootfs: "/b/rootfs", ReadonlyRootfs: true}},
		{"negative pid", Container{ID: "c", Pid: -5}, false, &agent.Container{Id: "c", Pid: -5}},
		{"user namespace", Container{ID: "c", Service: "s", Pid: 7,
			UIDMappings: []IDMapping{{0, 100000, 65536}, {65536, 0, 1}},
			GIDMappings: []IDMapping{{0, 200000, 65536}}}, true,
			&agent.Container{Id: "c", Service: "s", Pid: 7,
				UidMappings: []*agent.IDMapping{{ContainerId: 0, HostId: 100000, Size: 65536}, {ContainerId: 65536, HostId: 0, Size: 1}},
				GidMappings: []*agent.IDMapping{{ContainerId: 0, HostId: 200000, Size: 65536}}}},
		{"facts of a pod", Container{ID: "c", Service: "s", Pid: 7, OS: "linux",
			Facts: &Facts{Pod: &Pod{Namespace: "payments"}, ContainerdNamespace: "k8s.io", Image: "docker.io/library/busybox:1.36"}}, true,
			&agent.Container{Id: "c", Service: "s", Pid: 7, Os: "linux",
				Facts: &agent.ContainerFacts{Pod: &agent.PodFacts{Namespace: "payments"}, ContainerdNamespace: "k8s.io", Image: "docker.io/library/busybox:1.36"}}},
		{"facts of a pod whose namespace is unknown", Container{ID: "c", Service: "s", Facts: &Facts{Pod: &Pod{}}}, false,
			&agent.Container{Id: "c", Service: "s", Facts: &agent.ContainerFacts{Pod: &agent.PodFacts{}}}},
		{"facts of no pod", Container{ID: "c", Service: "s", Facts: &Facts{ContainerdNamespace: "prod"}}, true,
			&agent.Container{Id: "c", Service: "s", Facts: &agent.ContainerFacts{ContainerdNamespace: "prod"}}},
		{"facts, none known", Container{ID: "c", Service: "s", Facts: &Facts{}}, true,
			&agent.Container{Id: "c", Service: "s", Facts: &agent.ContainerFacts{}}},
		{"long strings", Container{ID: string(bytes.Repeat([]byte("i"), 300)), Service: "é\x00x", Rootfs: string(bytes.Repeat([]byte("/r"), 5000))}, false,
			&agent.Container{Id: string(bytes.Repeat([]byte("i"), 300)), Service: "é\x00x", Rootfs: string(bytes.Repeat([]byte("/r"), 5000))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, before := range []bool{false, true} {
				want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&agent.Request{Op: &agent.Request_Prepare{
					Prepare: &agent.PrepareRequest{Container: tt.want, Attach: tt.attach, BeforeCreate: before}}})
				if err != nil {
					t.Fatal(err)
				}
				if got := encodePrepare(&tt.ctr, tt.attach, before); !bytes.Equal(got, want) {
					t.Fatalf("prepare (before_create %v) encoding\n got %x\nwant %x", before, got, want)
				}
			}
		})
	}
	for _, tt := range tests {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&agent.Request{Op: &agent.Request_Targets{
			Targets: &agent.TargetsRequest{Container: tt.want}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeTargets(&tt.ctr); !bytes.Equal(got, want) {
			t.Fatalf("%s: targets encoding\n got %x\nwant %x", tt.name, got, want)
		}
	}
	for _, id := range []string{"", "c1", string(bytes.Repeat([]byte("x"), 200))} {
		for _, p := range []Process{{}, {Pid: 4242}, {Pid: 4242, Start: 1 << 40}, {Start: 7}} {
			for _, noReply := range []bool{false, true} {
				want, err := proto.Marshal(&agent.Request{Op: &agent.Request_Release{Release: &agent.ReleaseRequest{ContainerId: id, Pid: int32(p.Pid), PidStart: p.Start, NoReply: noReply}}})
				if err != nil {
					t.Fatal(err)
				}
				if got := encodeRelease(id, p, noReply); !bytes.Equal(got, want) {
					t.Fatalf("release %q %+v no_reply %v encoding\n got %x\nwant %x", id, p, noReply, got, want)
				}
			}
		}
	}
	for _, id := range []string{"", "c1", string(bytes.Repeat([]byte("x"), 200))} {
		for _, pid := range []int{0, 1, 4242, -3, 1<<31 - 1} {
			want, err := proto.Marshal(&agent.Request{Op: &agent.Request_Bind{Bind: &agent.BindRequest{ContainerId: id, Pid: int32(pid)}}})
			if err != nil {
				t.Fatal(err)
			}
			if got := encodeBind(id, pid); !bytes.Equal(got, want) {
				t.Fatalf("bind %q %d encoding\n got %x\nwant %x", id, pid, got, want)
			}
		}
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		name string
		msg  *agent.Response
		want *response
	}{
		{"prepared, attached", &agent.Response{Result: &agent.Response_Prepare{Prepare: &agent.PrepareResponse{
			Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: -1}, {Target: "/etc/app.conf", FdIndex: -1}}}}},
			&response{prepared: true, hasResult: true, mounts: []Mount{{"/run/secrets", -1}, {"/etc/app.conf", -1}}}},
		{"prepared, fds", &agent.Response{Result: &agent.Response_Prepare{Prepare: &agent.PrepareResponse{
			Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: 0}, {Target: "/x", FdIndex: 1}}}}},
			&response{prepared: true, hasResult: true, mounts: []Mount{{"/run/secrets", 0}, {"/x", 1}}}},
		{"prepared, nothing", &agent.Response{Result: &agent.Response_Prepare{Prepare: &agent.PrepareResponse{}}},
			&response{prepared: true, hasResult: true}},
		{"released", &agent.Response{Result: &agent.Response_Release{Release: &agent.ReleaseResponse{}}},
			&response{released: true, hasResult: true}},
		{"bound", &agent.Response{Result: &agent.Response_Bind{Bind: &agent.BindResponse{}}},
			&response{bound: true, hasResult: true}},
		{"list", &agent.Response{Result: &agent.Response_List{List: &agent.ListResponse{}}}, &response{hasResult: true}},
		{"targets", &agent.Response{Result: &agent.Response_Targets{Targets: &agent.TargetsResponse{Targets: []string{"/run/secrets/a", "/etc/app/cert.pem"}}}},
			&response{targeted: true, hasResult: true, targets: []string{"/run/secrets/a", "/etc/app/cert.pem"}}},
		{"targets, none", &agent.Response{Result: &agent.Response_Targets{Targets: &agent.TargetsResponse{}}},
			&response{targeted: true, hasResult: true}},
		{"not granted", &agent.Response{Error: &agent.Error{Code: agent.Error_NOT_GRANTED, Message: `service "x" is not granted to this node`}},
			&response{err: &Error{Code: NotGranted, Message: `service "x" is not granted to this node`}}},
		{"unknown code", &agent.Response{Error: &agent.Error{Code: 99}}, &response{err: &Error{Code: 99}}},
		{"empty", &agent.Response{}, &response{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeResponse(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestErrorReadsLikeLocalapi(t *testing.T) {
	e := &Error{Code: NotGranted, Message: "service \"x\" is not granted to this node"}
	if got, want := e.Error(), "agent: NOT_GRANTED: service \"x\" is not granted to this node"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	for c := Unknown; c <= Refused; c++ {
		if c.String() != agent.Error_Code(c).String() {
			t.Errorf("code %d: %s, api/agent says %s", c, c, agent.Error_Code(c))
		}
	}
	if Code(42).String() != "42" {
		t.Errorf("unknown code: %s", Code(42))
	}
}

// FuzzDecodeResponse decodes arbitrary bytes with the hand decoder and with
// proto.Unmarshal: whenever the protobuf runtime accepts a message, the
// hand decoder must accept it too and read the same error and mounts.
func FuzzDecodeResponse(f *testing.F) {
	for _, m := range []*agent.Response{
		{Result: &agent.Response_Prepare{Prepare: &agent.PrepareResponse{Mounts: []*agent.MountPoint{{Target: "/run/secrets", FdIndex: -1}}}}},
		{Result: &agent.Response_Release{Release: &agent.ReleaseResponse{}}},
		{Error: &agent.Error{Code: agent.Error_INVALID, Message: "bad"}},
		{Result: &agent.Response_List{List: &agent.ListResponse{Containers: []*agent.MountedContainer{{Id: "c"}}}}},
		{Result: &agent.Response_Targets{Targets: &agent.TargetsResponse{Targets: []string{"/run/secrets/a", "/x"}}}},
		{Result: &agent.Response_Bind{Bind: &agent.BindResponse{}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte{0x12, 0x00, 0x12, 0x04, 0x0a, 0x02, 0x10, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeResponse(b)
		var want agent.Response
		perr := proto.Unmarshal(b, &want)
		if perr != nil {
			return
		}
		if err != nil {
			t.Fatalf("proto.Unmarshal accepts %x, decodeResponse says %v", b, err)
		}
		if (want.GetError() != nil) != (got.err != nil) {
			t.Fatalf("%x: error %v vs %v", b, want.GetError(), got.err)
		}
		if got.err != nil && (int32(got.err.Code) != int32(want.GetError().GetCode()) || got.err.Message != want.GetError().GetMessage()) {
			t.Fatalf("%x: error %+v vs %v", b, got.err, want.GetError())
		}
		if got.prepared != (want.GetPrepare() != nil) || got.released != (want.GetRelease() != nil) || got.targeted != (want.GetTargets() != nil) || got.bound != (want.GetBind() != nil) || got.hasResult != (want.GetResult() != nil) {
			t.Fatalf("%x: result %+v vs %v", b, got, &want)
		}
		if len(got.mounts) != len(want.GetPrepare().GetMounts()) {
			t.Fatalf("%x: %d mounts vs %d", b, len(got.mounts), len(want.GetPrepare().GetMounts()))
		}
		if !slices.Equal(got.targets, want.GetTargets().GetTargets()) {
			t.Fatalf("%x: targets %q vs %q", b, got.targets, want.GetTargets().GetTargets())
		}
		for i, m := range want.GetPrepare().GetMounts() {
			if got.mounts[i] != (Mount{m.GetTarget(), int(m.GetFdIndex())}) {
				t.Fatalf("%x: mount %d: %+v vs %v", b, i, got.mounts[i], m)
			}
		}
	})
}

// FuzzEncodePrepare checks the hand encoding against proto.Marshal for
// arbitrary containers (strings that are not UTF-8 included: proto.Marshal
// refuses those, and so must the agent's decoder, so they are skipped).
func FuzzEncodePrepare(f *testing.F) {
	f.Add("c1", "web", int32(4242), "/", true, true, uint32(0), uint32(100000), uint32(65536), "linux")
	f.Add("", "", int32(-1), "", false, false, uint32(1<<31), uint32(0), uint32(1), "")
	f.Fuzz(func(t *testing.T, id, service string, pid int32, rootfs string, ro, attach bool, cid, hid, size uint32, os string) {
		before := !attach && pid == 0
		c := Container{ID: id, Service: service, Pid: int(pid), Rootfs: rootfs, ReadonlyRootfs: ro, OS: os,
			UIDMappings: []IDMapping{{cid, hid, size}}, GIDMappings: []IDMapping{{hid, cid, size}, {}}}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&agent.Request{Op: &agent.Request_Prepare{Prepare: &agent.PrepareRequest{
			Attach: attach, BeforeCreate: before,
			Container: &agent.Container{Id: id, Service: service, Pid: pid, Rootfs: rootfs, ReadonlyRootfs: ro, Os: os,
				UidMappings: []*agent.IDMapping{{ContainerId: cid, HostId: hid, Size: size}},
				GidMappings: []*agent.IDMapping{{ContainerId: hid, HostId: cid, Size: size}, {}}},
		}}})
		if err != nil {
			return
		}
		if got := encodePrepare(&c, attach, before); !bytes.Equal(got, want) {
			t.Fatalf("\n got %x\nwant %x", got, want)
		}
	})
}
