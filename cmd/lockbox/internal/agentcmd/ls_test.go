package agentcmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/lockbox-project/lockbox/agent/localapi"
	api "github.com/lockbox-project/lockbox/api/agent"
)

// newRoot is a lockbox root command holding the agent command alone.
func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "lockbox", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(New())
	return root
}

// lsAgent is an agent that holds two containers.
type lsAgent struct{}

func (lsAgent) Prepare(context.Context, *api.PrepareRequest) (*api.PrepareResponse, []*os.File, error) {
	return nil, nil, localapi.Errorf(api.Error_INVALID, "not here")
}
func (lsAgent) Release(context.Context, string) error { return nil }
func (lsAgent) List(context.Context) (*api.ListResponse, error) {
	return &api.ListResponse{Containers: []*api.MountedContainer{
		{Id: "c1", Service: "web", Targets: []string{"/run/secrets/a", "/run/secrets/b"}},
		{Id: "c2", Service: "db", Targets: []string{"/etc/db.conf"}},
	}}, nil
}

func TestAgentLs(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := localapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := localapi.NewServer(lsAgent{}, nil)
	go srv.Serve(ln)
	defer srv.Close()

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"agent", "ls", "--socket", sock}, "CONTAINER   SERVICE   TARGETS\nc1          web       /run/secrets/a,/run/secrets/b\nc2          db        /etc/db.conf\n"},
		{[]string{"agent", "ls", "-q", "--socket", sock}, "c1\nc2\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs(tt.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", out.String(), tt.want)
			}
		})
	}

	root := newRoot()
	root.SetArgs([]string{"agent", "ls", "--socket", filepath.Join(t.TempDir(), "none.sock")})
	root.SetOut(&bytes.Buffer{})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "dial agent") {
		t.Errorf("ls without an agent: %v", err)
	}
}
