package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
)

func loadTestCompose(t *testing.T, stack, compose string, env map[string]string) (*stackPlan, error) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "s.txt"), "data")
	path := filepath.Join(dir, "compose.yaml")
	writeFile(t, path, compose)
	files, err := readComposeFiles([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkComposeText(files); err != nil {
		return nil, err
	}
	p, err := loadCompose(context.Background(), stack, files, env)
	if err != nil {
		return nil, err
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return planStack(stack, p, lookup)
}

// How compose-go hands over a mode, and what Lockbox makes of it. YAML
// 1.2 as compose-go reads it: 0440 and 0o440 are octal, 288 decimal, a
// quoted "0440" is parsed as octal by compose-go; all are 0440. A plain
// 440 is decimal 440 (0670) to YAML and to docker: refused as ambiguous.
func TestStackModes(t *testing.T) {
	tests := []struct {
		yaml    string
		want    uint32
		wantErr string
	}{
		{"0440", 0o440, ""},
		{"0o440", 0o440, ""},
		{"288", 0o440, ""},
		{`"0440"`, 0o440, ""},
		{`"440"`, 0o440, ""}, // a string is octal to compose-go
		{"0400", 0o400, ""},
		{"0777", 0o777, ""},
		{"4", 4, ""},       // one digit reads the same either way
		{"292", 0o444, ""}, // holds a 9: decimal only
		{"440", 0, "mode 440 is ambiguous"},
		{"644", 0, "decimal number 644, which is 01204, not a permission mode, while it looks like octal 0644: write 0644 (or 0o644) for mode 0644"},
		{"0", 0, "mode 0 would make the file unreadable"},
		{"01000", 0, "mode 01000 holds more than permission bits"},
		{"04440", 0, "mode 04440 holds more than permission bits"},
	}
	for _, tc := range tests {
		t.Run(tc.yaml, func(t *testing.T) {
			plan, err := loadTestCompose(t, "st", fmt.Sprintf("services:\n  a:\n    image: x\n    secrets:\n      - source: s\n        mode: %s\nsecrets:\n  s:\n    file: s.txt\n", tc.yaml), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer plan.wipe()
			if got := plan.services[0].Secrets[0].Target.Mode; got != tc.want {
				t.Fatalf("mode %#o, want %#o", got, tc.want)
			}
		})
	}
}

// Names as docker stack deploy gives them (cli/compose/convert): secrets
// STACK_KEY unless name: says otherwise, external ones by name: or key;
// services STACK_SERVICE; targets default to the compose key.
func TestStackNames(t *testing.T) {
	plan, err := loadTestCompose(t, "Shop", `
name: ignored-project-name
services:
  web:
    image: x
    secrets: [a, b, c, d]
secrets:
  a: {file: s.txt}
  b: {file: s.txt, name: custom_b}
  c: {external: true}
  d: {external: true, name: other_d}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.wipe()
	var got []string
	for _, s := range plan.secrets {
		got = append(got, fmt.Sprintf("%s=%s/%v", s.key, s.name, s.external))
	}
	if want := "a=Shop_a/false c=c/true b=custom_b/false d=other_d/true"; strings.Join(got, " ") != want {
		t.Fatalf("secrets: %s, want %s", strings.Join(got, " "), want)
	}
	web := plan.services[0]
	if web.Name != "Shop_web" {
		t.Fatalf("service name %s", web.Name)
	}
	var refs []string
	for _, r := range web.Secrets {
		refs = append(refs, r.SecretName+">"+r.Target.Name)
	}
	if want := "Shop_a>a c>c custom_b>b other_d>d"; strings.Join(refs, " ") != want {
		t.Fatalf("references %s, want %s", strings.Join(refs, " "), want)
	}
}

// Profiles do not hide services (docker stack deploy has none), and a
// service's env_file, which only the container runtime reads, need not
// exist here.
func TestStackProfilesAndEnvFiles(t *testing.T) {
	plan, err := loadTestCompose(t, "st", `
services:
  a:
    image: x
    profiles: [debug]
    env_file: ./missing.env
    secrets: [s]
secrets:
  s: {environment: TOKEN}
`, map[string]string{"TOKEN": "t0ken"})
	if err != nil {
		t.Fatal(err)
	}
	defer plan.wipe()
	if len(plan.services) != 1 || string(plan.secrets[0].data) != "t0ken" {
		t.Fatalf("plan: %+v", plan.services)
	}
	plan.wipe()
	if !slices.Equal(plan.secrets[0].data, make([]byte, 5)) {
		t.Fatal("wipe left data")
	}
}

func TestStackTwoKeysOneName(t *testing.T) {
	_, err := loadTestCompose(t, "st", "secrets:\n  a: {file: s.txt, name: same}\n  b: {file: s.txt, name: same}\n", nil)
	if err == nil || !strings.Contains(err.Error(), `secrets "a" and "b" both name the secret 'same'`) {
		t.Fatal(err)
	}
}

// The override that docs/compose.md gives nerdctl compose users, read by
// the compose library nerdctl uses: the services keep their images and
// environment, gain Lockbox's runtime and claim annotation, and lose the
// secrets: that nerdctl would bind-mount from host files over Lockbox's
// targets.
func TestNerdctlOverride(t *testing.T) {
	dir := filepath.Join("testdata", "compose", "wordpress")
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	details := composetypes.ConfigDetails{WorkingDir: abs, ConfigFiles: []composetypes.ConfigFile{
		{Filename: filepath.Join(abs, "compose.yaml")}, {Filename: filepath.Join(abs, "compose.nerdctl.yaml")},
	}, Environment: map[string]string{}}
	p, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) { o.SetProjectName("wp", true) })
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"db": "wp_db", "wordpress": "wp_wordpress"} {
		s := p.Services[name]
		if s.Runtime != "io.containerd.lockbox.v2" || s.Annotations["lockbox.service"] != want || len(s.Secrets) != 0 || s.Image == "" {
			t.Errorf("%s: runtime %q annotations %v secrets %v image %q", name, s.Runtime, s.Annotations, s.Secrets, s.Image)
		}
	}
	if p.Services["db"].Environment["MYSQL_PASSWORD_FILE"] == nil {
		t.Error("the override lost the service's environment")
	}
	// And the annotation names the service "lockbox stack deploy -c
	// compose.yaml wp" creates.
	files, err := readComposeFiles([]string{filepath.Join(dir, "compose.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	base, err := loadCompose(context.Background(), "wp", files, nil)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planStack("wp", base, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.wipe()
	if plan.services[0].Name != "wp_db" || plan.services[1].Name != "wp_wordpress" {
		t.Fatalf("stack services: %s, %s", plan.services[0].Name, plan.services[1].Name)
	}
}

// The text check runs on any file before the loader: it must not panic,
// and a mode it lets through must not be a plain octal-looking number.
func FuzzCheckComposeText(f *testing.F) {
	f.Add([]byte("services:\n  a:\n    secrets:\n      - source: s\n        mode: 440\n"))
	f.Add([]byte("services:\n  a:\n    secrets: [{source: s, mode: 0440}]\nsecrets:\n  s: {driver: x}\n"))
	f.Add([]byte("---\nservices: []\n---\nservices: {a: {secrets: [s]}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = checkComposeText([]composeFile{{path: "f", content: b}})
	})
}
