//go:build linux

package shim

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lockbox-project/lockbox/internal/testutil/benchinfo"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The options each client sends, as the runc shim must get them.
func TestRuncOptions(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "lockbox.toml")
	if err := os.WriteFile(cfgFile, []byte("BinaryName = \"/usr/bin/crun\"\nRoot = \"/run/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := func(s string) *anypb.Any {
		return mustAny(t, &runtimeoptions.Options{ConfigBody: []byte(s)})
	}
	for _, tc := range []struct {
		name    string
		in      *anypb.Any
		want    *runcoptions.Options // nil: no options
		wantErr []string
	}{
		{name: "nothing (ctr, the Go client without options)", in: nil},
		{name: "empty any", in: &anypb.Any{}},
		{name: "runc options (ctr --runc-root, Go client)", in: mustAny(t, &runcoptions.Options{BinaryName: "/usr/bin/runc", Root: "/r"}),
			want: &runcoptions.Options{BinaryName: "/usr/bin/runc", Root: "/r"}},
		{name: "CRI options table", in: body("BinaryName = '/usr/bin/runc'\nRoot = '/run/r'\nSystemdCgroup = true\nNoPivotRoot = true\nIoUid = 1000\nIoGid = 1001\nShimCgroup = '/shim'\nCriuImagePath = '/c'\n"),
			want: &runcoptions.Options{BinaryName: "/usr/bin/runc", Root: "/run/r", SystemdCgroup: true, NoPivotRoot: true, IoUid: 1000, IoGid: 1001, ShimCgroup: "/shim", CriuImagePath: "/c"}},
		{name: "keys in any case, as containerd decodes runc's table", in: body("binaryname = 'runc'\nsystemdcgroup = true\n"),
			want: &runcoptions.Options{BinaryName: "runc", SystemdCgroup: true}},
		{name: "empty options table", in: body(""), want: &runcoptions.Options{}},
		{name: "TypeUrl of runc's options in the table", in: body("TypeUrl = 'containerd.runc.v1.Options'\nRoot = '/r'\n"),
			want: &runcoptions.Options{Root: "/r"}},
		{name: "ConfigPath", in: mustAny(t, &runtimeoptions.Options{ConfigPath: cfgFile}),
			want: &runcoptions.Options{BinaryName: "/usr/bin/crun", Root: "/run/x"}},
		{name: "unknown key", in: body("BinaryName = 'runc'\nBinaryNmae = 'x'\n"),
			wantErr: []string{`unknown key "BinaryNmae"`, "BinaryName", "SystemdCgroup", RuntimeType}},
		{name: "unknown table", in: body("[sandbox]\nx = 1\n"), wantErr: []string{`"sandbox`}},
		{name: "wrong type", in: body("SystemdCgroup = 'yes'\n"), wantErr: []string{"SystemdCgroup"}},
		{name: "not TOML", in: body("Root = \n"), wantErr: []string{"the runtime's options table"}},
		{name: "missing ConfigPath file", in: mustAny(t, &runtimeoptions.Options{ConfigPath: filepath.Join(dir, "none.toml")}),
			wantErr: []string{"ConfigPath", "none.toml"}},
		{name: "unknown key in ConfigPath file", in: mustAny(t, &runtimeoptions.Options{ConfigPath: writeFile(t, dir, "bad.toml", "Bogus = 1\n")}),
			wantErr: []string{`unknown key "Bogus"`, "bad.toml"}},
		{name: "TypeUrl of another runtime", in: mustAny(t, &runtimeoptions.Options{TypeUrl: "io.containerd.runsc.v1.options", ConfigBody: []byte("Root = '/r'")}),
			wantErr: []string{"io.containerd.runsc.v1.options"}},
		{name: "options of another type", in: mustAny(t, wrapperspb.String("x")),
			wantErr: []string{"google.protobuf.StringValue", "containerd.runc.v1.Options"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runcOptions(tc.in)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("runcOptions = %v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && !proto.Equal(got, tc.want)) {
				t.Fatalf("runcOptions = %v, want %v", got, tc.want)
			}
			// What the runc shim gets at create: the same options, as runc's.
			a, err := runcOptionsAny(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if !isEmptyAny(a) {
					t.Fatalf("runcOptionsAny = %v, want nothing", a)
				}
				return
			}
			var o runcoptions.Options
			if err := a.UnmarshalTo(&o); err != nil {
				t.Fatalf("runcOptionsAny gave %s: %v", a.GetTypeUrl(), err)
			}
			if !proto.Equal(&o, tc.want) {
				t.Fatalf("runcOptionsAny = %v, want %v", &o, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The shim's start finds runc's options where the runc manager looks (the
// shim's cgroup) whichever form containerd sent; other extensions stay.
func TestTranslateBootstrap(t *testing.T) {
	other := mustAny(t, wrapperspb.String("other"))
	p := &bootapi.BootstrapParams{Extensions: []*bootapi.Extension{
		{Value: other},
		{Value: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("ShimCgroup = '/lockbox'\n")})},
	}}
	if err := translateBootstrap(p); err != nil {
		t.Fatal(err)
	}
	var o runcoptions.Options
	if found, err := p.FindExtension(&o); err != nil || !found || o.ShimCgroup != "/lockbox" {
		t.Fatalf("runc options after translation: found %v, %v, %v", found, err, &o)
	}
	if p.Extensions[0].Value != other {
		t.Errorf("another extension was changed: %v", p.Extensions[0].Value)
	}

	bad := &bootapi.BootstrapParams{Extensions: []*bootapi.Extension{{Value: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("Nope = true\n")})}}}
	if err := translateBootstrap(bad); err == nil || !strings.Contains(err.Error(), `"Nope"`) {
		t.Fatalf("translateBootstrap with an unknown key: %v", err)
	}
}

// -info's stdin as containerd writes it (CRI introspects every runtime
// handler at start) reaches the runc manager's Info as runc's options.
func TestTranslateInfo(t *testing.T) {
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(mustAny(t, m))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	runcB := marshal(&runcoptions.Options{BinaryName: "runc"})
	for _, tc := range []struct {
		name    string
		in      []byte
		want    *runcoptions.Options
		same    bool
		wantErr string
	}{
		{name: "nothing", in: nil, same: true},
		{name: "runc options", in: runcB, same: true},
		{name: "CRI options table", in: marshal(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = '/usr/bin/runc'\n")}),
			want: &runcoptions.Options{BinaryName: "/usr/bin/runc"}},
		{name: "unknown key", in: marshal(&runtimeoptions.Options{ConfigBody: []byte("Typo = 1\n")}), wantErr: `"Typo"`},
		{name: "garbage", in: []byte{0xff, 0xff}, wantErr: "decode runtime options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := translateInfo(strings.NewReader(string(tc.in)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("translateInfo: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(r)
			if tc.same {
				if string(out) != string(tc.in) {
					t.Fatalf("translateInfo changed %x into %x", tc.in, out)
				}
				return
			}
			var a anypb.Any
			var o runcoptions.Options
			if err := proto.Unmarshal(out, &a); err != nil {
				t.Fatal(err)
			}
			if err := a.UnmarshalTo(&o); err != nil || !proto.Equal(&o, tc.want) {
				t.Fatalf("translateInfo gave %v (%v), want %v", &o, err, tc.want)
			}
		})
	}
}

// optionsTasks records the options the runc service got at create.
type optionsTasks struct {
	taskAPI.TTRPCTaskService
	got *anypb.Any
}

func (f *optionsTasks) Create(_ context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	f.got = r.Options
	return &taskAPI.CreateTaskResponse{Pid: 1}, nil
}

// The runc service never sees runtimeoptions.v1.Options at create (its
// type assertion would panic), and a bad table fails the create with the
// key's name before runc runs.
func TestCreateTranslatesOptions(t *testing.T) {
	inner := &optionsTasks{}
	s := optionsService{inner}
	req := &taskAPI.CreateTaskRequest{ID: "c1", Options: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("Root = '/run/lbx'\n")})}
	if _, err := s.Create(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var o runcoptions.Options
	if err := inner.got.UnmarshalTo(&o); err != nil || o.Root != "/run/lbx" {
		t.Fatalf("runc service got %v (%v)", inner.got, err)
	}

	inner.got = nil
	req.Options = mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("Rooot = '/x'\n")})
	if _, err := s.Create(context.Background(), req); err == nil || !strings.Contains(err.Error(), `"Rooot"`) || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("create with an unknown key: %v", err)
	}
	if inner.got != nil {
		t.Fatal("the runc service ran a create whose options were refused")
	}
}

// What translating CRI's options table costs each create.
func BenchmarkRuncOptionsAny(b *testing.B) {
	a, err := anypb.New(&runtimeoptions.Options{ConfigBody: []byte("BinaryName = '/usr/bin/runc'\nRoot = '/run/containerd/runc'\nSystemdCgroup = true\n")})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := runcOptionsAny(a); err != nil {
			b.Fatal(err)
		}
	}
	benchinfo.Print(b)
}

// The shim's -info, as CRI runs it for each runtime handler at start:
// the runc manager's Info gets runc's options from the options table.
func TestManagerInfoTakesOptionsTable(t *testing.T) {
	m := &lockboxManager{Shim: manager.NewShimManager(RuntimeType)}
	in, err := proto.Marshal(mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("BinaryName = '/bin/true'\n")}))
	if err != nil {
		t.Fatal(err)
	}
	// /bin/true has no "features" command: Info then answers without
	// features, which is all this test needs.
	info, err := m.Info(context.Background(), bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var o runcoptions.Options
	if err := info.GetOptions().UnmarshalTo(&o); err != nil || o.BinaryName != "/bin/true" {
		t.Fatalf("Info's options: %v (%v), want runc's with BinaryName /bin/true", info.GetOptions(), err)
	}

	in, err = proto.Marshal(mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("BinaryName = '/bin/true'\nRunc = 'x'\n")}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Info(context.Background(), bytes.NewReader(in)); err == nil || !strings.Contains(err.Error(), `"Runc"`) {
		t.Fatalf("Info with an unknown key: %v", err)
	}
}
