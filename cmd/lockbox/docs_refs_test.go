package main

// The names around the lockbox commands that README.md and docs/ show:
// runtimes, hook events, make targets, units, variables, and flags named
// in prose. docs_test.go extracts the pages.

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
	"github.com/lockbox-project/lockbox/plugin/shimproxy"
)

// runtimeRef is a runtime name or path a page gives containerd, nerdctl,
// CRI or an OCI hook.
type runtimeRef struct {
	file  string
	line  int
	kind  string
	value string
}

var runtimeRefs = []struct {
	kind string
	re   *regexp.Regexp
}{
	{"--runtime", regexp.MustCompile(`--runtime[= ]+([^\s\\]+)`)},
	{"runtime:", regexp.MustCompile(`^\s*runtime:\s*(\S+)`)},
	{"runtime_type", regexp.MustCompile(`runtime_type\s*=\s*['"]([^'"]+)`)},
	{"WithRuntime", regexp.MustCompile(`WithRuntime\("([^"]+)"`)},
	{"BinaryName", regexp.MustCompile(`BinaryName\s*[:=]\s*['"]([^'"]+)`)},
	{"--runc-binary", regexp.MustCompile(`--runc-binary[= ]+(\S+)`)},
	{"hook", regexp.MustCompile(`lockbox-runtime"?,?\s*"?hook"?,?\s*"?([A-Za-z|/]+)`)},
}

// docRuntimeRefs returns the runtime references of the pages' code (blocks
// and inline) and of the files under docs/containerd/.
func docRuntimeRefs(t *testing.T) []runtimeRef {
	t.Helper()
	var refs []runtimeRef
	scan := func(file string, line int, text string) {
		for _, r := range runtimeRefs {
			for _, m := range r.re.FindAllStringSubmatchIndex(text, -1) {
				kind := r.kind
				if kind == "--runtime" && strings.HasSuffix(strings.TrimSpace(text[:m[0]]), "crictl runp") {
					kind = "crictl --runtime" // a CRI runtime handler
				}
				refs = append(refs, runtimeRef{file, line, kind, text[m[2]:m[3]]})
			}
		}
	}
	for _, file := range docFiles(t) {
		blocks, spans := splitDoc(readDoc(t, file))
		for _, b := range blocks {
			for i, l := range b.lines {
				scan(file, b.start+i, l)
			}
		}
		for _, s := range spans {
			scan(file, s.line, s.text)
		}
	}
	others, err := filepath.Glob(filepath.Join("..", "..", "docs", "containerd", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range others {
		if strings.HasSuffix(f, ".md") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for n := 1; sc.Scan(); n++ {
			scan("docs/containerd/"+filepath.Base(f), n, sc.Text())
		}
	}
	return refs
}

// shimRuntimeType reads plugin/shim's RuntimeType from its source: the
// package is Linux-only and links containerd's shim, too much for this
// test to import.
func shimRuntimeType(t *testing.T) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "plugin", "shim", "shim_linux.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if o := f.Scope.Lookup("RuntimeType"); o != nil {
		if v, ok := o.Decl.(*ast.ValueSpec); ok && len(v.Values) == 1 {
			if lit, ok := v.Values[0].(*ast.BasicLit); ok {
				s, err := strconv.Unquote(lit.Value)
				if err == nil {
					return s
				}
			}
		}
	}
	t.Fatal("plugin/shim/shim_linux.go has no RuntimeType constant")
	return ""
}

// TestDocsRuntimeReferences: every runtime the pages name is Lockbox's
// shim (by its runtime type or its installed path), runc's shim with
// lockbox-runtime as its binary, or lockbox-runtime by path; every hook
// event they give lockbox-runtime is one it handles.
func TestDocsRuntimeReferences(t *testing.T) {
	rt := shimRuntimeType(t)
	// containerd runs runtime type io.containerd.NAME.vN as the binary
	// containerd-shim-NAME-vN.
	parts := strings.Split(rt, ".")
	if len(parts) != 4 || parts[0] != "io" || parts[1] != "containerd" {
		t.Fatalf("RuntimeType %q is not io.containerd.NAME.vN", rt)
	}
	shimBin := "containerd-shim-" + parts[2] + "-" + parts[3]
	for _, bin := range []string{shimBin, "lockbox-runtime"} {
		if _, err := os.Stat(filepath.Join("..", bin)); err != nil {
			t.Errorf("no cmd/%s: %v", bin, err)
		}
	}
	const prefix = "/usr/local/bin/" // make install's PREFIX
	shimPath, wrapper := prefix+shimBin, prefix+"lockbox-runtime"
	allowed := map[string][]string{
		// windows.md's proxy shim names its own runtime type.
		"--runtime": {rt, shimPath, wrapper, shimproxy.RuntimeType},
		// containerd.md's CRI handler, the RuntimeClass's handler:
		"crictl --runtime": {"lockbox"},
		"runtime:":         {rt, wrapper},
		"runtime_type":     {rt, "io.containerd.runc.v2", shimproxy.RuntimeType},
		"WithRuntime":      {rt, "io.containerd.runc.v2", shimproxy.RuntimeType},
		"BinaryName":       {wrapper},
		"--runc-binary":    {wrapper},
		"hook":             {hotpath.CreateContainer, hotpath.Poststop},
	}
	counts := map[string]int{}
	for _, r := range docRuntimeRefs(t) {
		values := []string{r.value}
		if r.kind == "hook" {
			values = strings.FieldsFunc(r.value, func(c rune) bool { return c == '|' || c == '/' })
		}
		for _, v := range values {
			counts[r.kind]++
			found := false
			for _, a := range allowed[r.kind] {
				found = found || v == a
			}
			if !found {
				t.Errorf("%s:%d: %s %s: not one of %q", r.file, r.line, r.kind, v, allowed[r.kind])
			}
		}
	}
	t.Logf("runtime references checked: %v", counts)
	if counts["--runtime"] < 5 || counts["hook"] < 4 {
		t.Fatalf("found too few references (%v): is the extraction broken?", counts)
	}
}

// TestDocsMakeAndUnits: the make targets, systemd units and LOCKBOX_*
// variables the pages name exist: targets in the Makefile, units in
// contrib/systemd, variables in a unit, the Makefile, or the tree's Go
// code and scripts.
func TestDocsMakeAndUnits(t *testing.T) {
	read := func(path string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	makefile := read("Makefile")
	var known strings.Builder // where a LOCKBOX_ variable may be read: units, Makefile, code
	units, err := filepath.Glob(filepath.Join("..", "..", "contrib", "systemd", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in contrib/systemd: %v", err)
	}
	for _, u := range units {
		known.WriteString(read("contrib/systemd/" + filepath.Base(u)))
	}
	known.WriteString(makefile)
	// The tree's code and scripts, but not these tests, which name
	// variables in their tables.
	err = filepath.WalkDir(filepath.Join("..", ".."), func(path string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "docs"):
			return filepath.SkipDir
		case d.IsDir(), strings.HasPrefix(d.Name(), "docs_"):
			return nil
		case strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sh"):
			b, err := os.ReadFile(path)
			known.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lockboxVar := regexp.MustCompile(`\bLOCKBOX_[A-Z_]+\b`)
	checked := 0
	for _, file := range docFiles(t) {
		lines := shownLines(readDoc(t, file))
		for _, l := range lines {
			words := shellWords(l.text)
			for i := 0; i < len(words); i++ {
				switch words[i] {
				case "make":
					for _, target := range words[i+1:] {
						if target == "&&" || target == "|" || strings.Contains(target, "=") {
							break
						}
						checked++
						if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).MatchString(makefile) {
							t.Errorf("%s:%d: %s: the Makefile has no target %q", file, l.line, l.text, target)
						}
					}
				case "systemctl":
					if i+1 < len(words) {
						unit := words[len(words)-1]
						checked++
						if _, err := os.Stat(filepath.Join("..", "..", "contrib", "systemd", strings.TrimSuffix(unit, ".service")+".service")); err != nil {
							t.Errorf("%s:%d: %s: no unit %s in contrib/systemd", file, l.line, l.text, unit)
						}
					}
				}
			}
			for _, v := range lockboxVar.FindAllString(l.text, -1) {
				checked++
				if !strings.Contains(known.String(), v) {
					t.Errorf("%s:%d: %s: nothing reads %s", file, l.line, l.text, v)
				}
			}
		}
	}
	if checked < 8 {
		t.Fatalf("checked only %d names: is the extraction broken?", checked)
	}
	t.Logf("checked %d make targets, units and variables", checked)
}

// docsForeignFlags are the flags prose names that are not lockbox's, and
// whose they are. lockbox-nri's are checked against its source.
var docsForeignFlags = map[string]string{
	"--agent-socket":   "lockbox-nri",
	"--name":           "lockbox-nri",
	"--annotation":     "ctr, nerdctl",
	"--runtime":        "ctr, nerdctl, crictl",
	"--runc-binary":    "ctr",
	"--runc-root":      "ctr",
	"--root":           "runc, crun",
	"--pid-file":       "runc, crun",
	"--cgroup-manager": "crun",
	"--read-only":      "nerdctl, docker run",
	"--stop-signal":    "docker service create (cli.md: signal= reads signals as it does)",
}

// TestDocsInlineFlags: a flag that prose names in `code` (`--etcd-endpoints`)
// is a flag of some lockbox command, or one of docsForeignFlags.
func TestDocsInlineFlags(t *testing.T) {
	have := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { have["--"+f.Name] = true })
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	root := newRootCommand()
	root.InitDefaultCompletionCmd()
	walk(root)
	nri, err := os.ReadFile(filepath.Join("..", "..", "plugin", "nri", "cmd", "lockbox-nri", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for flag, owner := range docsForeignFlags {
		if owner == "lockbox-nri" && !strings.Contains(string(nri), `("`+strings.TrimPrefix(flag, "--")+`"`) {
			t.Errorf("lockbox-nri has no flag %s", flag)
		}
	}
	leading := regexp.MustCompile(`^--[a-z][a-z0-9-]*`)
	checked := 0
	for _, file := range docFiles(t) {
		_, spans := splitDoc(readDoc(t, file))
		for _, s := range spans {
			flag := leading.FindString(s.text)
			if flag == "" {
				continue
			}
			checked++
			if !have[flag] && docsForeignFlags[flag] == "" {
				t.Errorf("%s:%d: `%s`: no lockbox command has %s (another tool's? add it to docsForeignFlags)", file, s.line, s.text, flag)
			}
		}
	}
	t.Logf("checked %d flags named in prose", checked)
	if checked < 20 {
		t.Fatalf("checked only %d: is the extraction broken?", checked)
	}
}

// TestDocsGoCommands: the go commands the pages show name packages that
// exist, benchmarks (-bench) those packages have, and crictl at the
// version hack/deps.sh installs.
func TestDocsGoCommands(t *testing.T) {
	deps, err := os.ReadFile(filepath.Join("..", "..", "hack", "deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	benchFunc := regexp.MustCompile(`(?m)^func (Benchmark\w*)\(`)
	checked := 0
	for _, file := range docFiles(t) {
		for _, l := range shownLines(readDoc(t, file)) {
			words := shellWords(l.text)
			for i := 0; i+1 < len(words); i++ {
				if words[i] != "go" {
					continue
				}
				var bench string
				for j := i + 2; j < len(words); j++ {
					w := words[j]
					switch {
					case w == "-bench" && j+1 < len(words):
						bench = words[j+1]
					case strings.HasPrefix(w, "./"):
						dir := filepath.Join("..", "..", filepath.FromSlash(strings.TrimSuffix(strings.TrimSuffix(w, "..."), "/")))
						checked++
						if _, err := os.Stat(dir); err != nil {
							t.Errorf("%s:%d: %s: no package %s", file, l.line, l.text, w)
							continue
						}
						if bench == "" || bench == "." {
							continue
						}
						re, err := regexp.Compile(bench)
						if err != nil {
							t.Errorf("%s:%d: %s: -bench %s: %v", file, l.line, l.text, bench, err)
							continue
						}
						tests, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
						found := false
						for _, f := range tests {
							b, _ := os.ReadFile(f)
							for _, m := range benchFunc.FindAllStringSubmatch(string(b), -1) {
								found = found || re.MatchString(m[1])
							}
						}
						if !found {
							t.Errorf("%s:%d: %s: no benchmark matching %q in %s", file, l.line, l.text, bench, w)
						}
					case strings.Contains(w, "/cmd/crictl@"):
						checked++
						_, v, _ := strings.Cut(w, "@")
						if !strings.Contains(string(deps), "CRICTL_VERSION="+v) && !strings.Contains(string(deps), "CRICTL_VERSION=${CRICTL_VERSION:-"+v+"}") {
							t.Errorf("%s:%d: %s: hack/deps.sh installs another crictl", file, l.line, l.text)
						}
					}
				}
			}
		}
	}
	t.Logf("checked %d go packages and versions", checked)
	if checked < 8 {
		t.Fatalf("checked only %d: is the extraction broken?", checked)
	}
}

// docsForeignPaths are paths in prose that are another project's.
var docsForeignPaths = map[string]string{
	"internal/cri/server/container_create.go": "containerd's source",
	"cmd/containerd-shim-runc-v2/manager":     "containerd's source",
	"cmd/containerd-shim-runhcs-v1":           "hcsshim's source",
}

// TestDocsRepoReferences: the files, packages, symbols (pkg.Name) and
// tests (pkg/TestName, or TestName alone) that prose names in `code`
// exist, so that a rename does not leave the docs pointing at nothing.
func TestDocsRepoReferences(t *testing.T) {
	root := filepath.Join("..", "..")
	repoPath := regexp.MustCompile(`^(api|pki|internal|manager|agent|mounter|linux|windows|plugin|cmd|integration|bench|hack|contrib|docs|\.ci)/[\w./*-]*$`)
	qualified := regexp.MustCompile(`^(.*)[./]((?:Test|Benchmark)?[A-Z]\w*)$`)
	testName := regexp.MustCompile(`^(Test|Benchmark)[A-Z]\w*(/[\w/-]+)?$`)
	callArgs := regexp.MustCompile(`\([^)]*\)$`) // pkg.Func(arg) names pkg.Func
	// Every test and benchmark function of the tree, by name.
	funcs := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Benchmark)\w*)\(`)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			funcs[m[1]] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	declares := func(dir, name string) bool {
		files, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(dir), "*.go"))
		re := regexp.MustCompile(`(?m)^(func (\([^)]*\) )?|type |const |var |\t)` + regexp.QuoteMeta(name) + `\b`)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && re.Match(b) {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, file := range docFiles(t) {
		_, spans := splitDoc(readDoc(t, file))
		for _, s := range spans {
			text := callArgs.ReplaceAllString(s.text, "")
			switch {
			case testName.MatchString(text):
				checked++
				name, _, _ := strings.Cut(text, "/")
				if !funcs[name] {
					t.Errorf("%s:%d: `%s`: no such test or benchmark", file, s.line, s.text)
				}
			case repoPath.MatchString(text) && docsForeignPaths[text] == "":
				checked++
				path := strings.TrimSuffix(strings.TrimSuffix(text, "..."), "/")
				if m := qualified.FindStringSubmatch(path); m != nil {
					if !declares(m[1], m[2]) {
						t.Errorf("%s:%d: `%s`: %s declares no %s", file, s.line, s.text, m[1], m[2])
					}
					continue
				}
				if strings.Contains(path, "*") {
					if m, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(path))); len(m) == 0 {
						t.Errorf("%s:%d: `%s`: matches nothing", file, s.line, s.text)
					}
				} else if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(path))); err != nil {
					t.Errorf("%s:%d: `%s`: no such file or directory", file, s.line, s.text)
				}
			}
		}
	}
	t.Logf("checked %d paths, symbols and tests named in prose", checked)
	if checked < 50 {
		t.Fatalf("checked only %d: is the extraction broken?", checked)
	}
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces to
// "-", punctuation but "-" and "_" dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocsLinks: every relative link of the pages leads to a file or
// directory of the tree, and every #anchor to a heading of its page.
func TestDocsLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading := regexp.MustCompile(`^#+\s+(.*)$`)
	anchors := map[string]map[string]bool{}
	anchorsOf := func(file string) map[string]bool {
		if a, ok := anchors[file]; ok {
			return a
		}
		a := map[string]bool{}
		in := false
		for _, l := range readDoc(t, file) {
			if strings.HasPrefix(strings.TrimSpace(l), "```") {
				in = !in
			}
			if m := heading.FindStringSubmatch(l); m != nil && !in {
				a[githubAnchor(m[1])] = true
			}
		}
		anchors[file] = a
		return a
	}
	checked := 0
	for _, file := range docFiles(t) {
		for n, l := range readDoc(t, file) {
			for _, m := range link.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				path, anchor, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.ToSlash(filepath.Join(filepath.Dir(file), path))
					if _, err := os.Stat(filepath.Join("..", "..", filepath.FromSlash(dest))); err != nil {
						t.Errorf("%s:%d: link %s: no such file", file, n+1, target)
						continue
					}
				}
				if anchor != "" && !anchorsOf(dest)[anchor] {
					t.Errorf("%s:%d: link %s: %s has no heading with that anchor", file, n+1, target, dest)
				}
			}
		}
	}
	t.Logf("checked %d links", checked)
	if checked < 20 {
		t.Fatalf("checked only %d links: is the extraction broken?", checked)
	}
}

func TestGithubAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"containerd: the runtime wrapper":                                 "containerd-the-runtime-wrapper",
		"Fail closed: a plugin away between create and start":             "fail-closed-a-plugin-away-between-create-and-start",
		"The runtime shim: `containerd-shim-lockbox-v2` (containerd 2.x)": "the-runtime-shim-containerd-shim-lockbox-v2-containerd-2x",
		"Nodes (`lockbox node ls`, `lockbox node inspect`)":               "nodes-lockbox-node-ls-lockbox-node-inspect",
	} {
		if got := githubAnchor(heading); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", heading, got, want)
		}
	}
}
