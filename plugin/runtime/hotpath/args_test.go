package hotpath

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args string
		want Invocation
	}{
		{
			name: "containerd shim create",
			args: "--root /run/containerd/runc/default --log /b/log.json --log-format json create --bundle /b --pid-file /b/init.pid c1",
			want: Invocation{
				Root: "/run/containerd/runc/default", Log: "/b/log.json", LogFormat: "json",
				Globals: strings.Fields("--root /run/containerd/runc/default --log /b/log.json --log-format json"),
				Command: "create", ID: "c1", Bundle: "/b", PidFile: "/b/init.pid",
			},
		},
		{
			name: "systemd cgroup and console socket",
			args: "--root /r --log /l --log-format json --systemd-cgroup create --bundle /b --pid-file /p --console-socket /s.sock --no-pivot --no-new-keyring --preserve-fds 2 c2",
			want: Invocation{
				Root: "/r", Log: "/l", LogFormat: "json",
				Globals: strings.Fields("--root /r --log /l --log-format json --systemd-cgroup"),
				Command: "create", ID: "c2", Bundle: "/b", PidFile: "/p", PreserveFDs: 2,
			},
		},
		{
			name: "equals and single dash spellings",
			args: "-root=/r --log-format=text create -b=/b -pid-file /p c3",
			want: Invocation{
				Root: "/r", LogFormat: "text", Globals: []string{"-root=/r", "--log-format=text"},
				Command: "create", ID: "c3", Bundle: "/b", PidFile: "/p",
			},
		},
		{
			name: "bundle defaults to cwd",
			args: "create c4",
			want: Invocation{Command: "create", ID: "c4"},
		},
		{
			name: "delete force",
			args: "--root /r delete --force c5",
			want: Invocation{Root: "/r", Globals: []string{"--root", "/r"}, Command: "delete", ID: "c5", Force: true},
		},
		{
			name: "delete -f=false",
			args: "delete -f=false c6",
			want: Invocation{Command: "delete", ID: "c6"},
		},
		{
			name: "run detached",
			args: "run -d --bundle /b c7",
			want: Invocation{Command: "run", ID: "c7", Bundle: "/b", Detach: true},
		},
		{
			name: "unknown subcommand flags are not interpreted",
			args: "--root /r exec --process /p.json --detach c8",
			want: Invocation{Root: "/r", Globals: []string{"--root", "/r"}, Command: "exec"},
		},
		{
			name: "version",
			args: "--version",
			want: Invocation{Globals: []string{"--version"}},
		},
		{
			name: "id after double dash",
			args: "create --bundle /b -- -weird",
			want: Invocation{Command: "create", ID: "-weird", Bundle: "/b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := strings.Fields(tt.args)
			got, err := Parse(args)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.Args = args
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tt.args, *got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []string{
		"--root",
		"create --bundle",
		"create --bundle /b",
		"create --bundle /b a b",
		"delete",
		"create --preserve-fds x c",
		"create --preserve-fds 99999999 c",
	}
	for _, args := range tests {
		t.Run(args, func(t *testing.T) {
			_, err := Parse(strings.Fields(args))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, want a *ParseError", args, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"--root /r --log /l --log-format json create --bundle /b --pid-file /p c1",
		"delete --force c", "--version", "create -- -x", "run -d=false -b=/x y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, " ")
		inv, err := Parse(args)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(inv.Args, args) {
			t.Fatalf("Args not preserved")
		}
		switch inv.Command {
		case "create", "run", "delete":
			if inv.ID == "" {
				t.Fatalf("%s parsed without an ID", inv.Command)
			}
		}
		if len(inv.Globals) > len(args) {
			t.Fatalf("more globals than args")
		}
	})
}
