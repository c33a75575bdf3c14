package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/internal/testutil/managertest"
)

// Docker's WordPress stack against a whole manager (embedded etcd, CA,
// dispatcher, admin API on its root-only socket): deploy, an unchanged
// redeploy, a refused change of a secret's data of the same size (told
// apart only by the manager's keyed digest), and rm.
func TestStackAgainstManager(t *testing.T) {
	m := managertest.Start(t)
	cl := m.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &connFlags{host: "unix:///test/manager.sock", timeout: time.Minute}
	dir := composeDir(t, "wordpress")

	deploy := func() (string, error) {
		files, err := readComposeFiles([]string{filepath.Join(dir, "compose.yaml")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := loadCompose(ctx, "wp", files, nil)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := planStack("wp", p, os.LookupEnv)
		if err != nil {
			t.Fatal(err)
		}
		defer plan.wipe()
		var out bytes.Buffer
		err = (&stackDeployer{cl: cl, explain: c.explain, out: &out}).deploy(ctx, plan)
		return out.String(), err
	}

	if out, err := deploy(); err != nil || strings.Count(out, "Creating ") != 4 {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	db, err := cl.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: "wp_db"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(refStrings(db.Service), ", "); got != "wp_db_password>db_password : 0, wp_db_root_password>db_root_password : 0" {
		t.Fatalf("wp_db references: %s", got)
	}
	if out, err := deploy(); err != nil || strings.Contains(out, "Creating") {
		t.Fatalf("unchanged redeploy: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "db_root_password.txt"), "wp-root-password-2\n") // same size
	if _, err := deploy(); err == nil || !strings.Contains(err.Error(), "failed to update secret wp_db_root_password: only updates to Labels are allowed") {
		t.Fatalf("changed secret: %v", err)
	}
	list, err := cl.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Secrets) != 2 {
		t.Fatalf("%d secrets after the refused redeploy, want 2 (the comparison copy must be gone)", len(list.Secrets))
	}

	var out, errw bytes.Buffer
	if err := removeStacks(ctx, cl, c.explain, &out, &errw, []string{"wp"}); err != nil || errw.Len() != 0 {
		t.Fatalf("rm: %v\n%s", err, errw.String())
	}
	if list, err := cl.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil || len(list.Secrets) != 0 {
		t.Fatalf("after rm: %v %v", err, list.GetSecrets())
	}
}
