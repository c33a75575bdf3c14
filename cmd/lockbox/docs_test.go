package main

import (
	"bufio"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lockbox-project/lockbox/plugin/runtime/hotpath"
)

// This file keeps README.md and docs/ honest: every lockbox command they
// show exists with the flags shown (TestDocsCommandsParse, here, on every
// platform), and the ones that name nothing to fill in run against real
// managers (TestDocsCommandsRun, docs_linux_test.go). The runtime names and
// paths the pages give containerd, nerdctl and the hooks are checked too
// (TestDocsRuntimeReferences).

// docCmd is one lockbox command a page shows.
type docCmd struct {
	file   string // relative to the repository root
	line   int
	text   string   // as the page shows it, continuation lines joined
	args   []string // after "lockbox"
	stdin  string   // what a printf/echo piped into it writes
	inline bool     // from `inline code` in prose, not a code block
	// synopsis: it names something to fill in (NAME, <id>, ...), shows
	// alternatives (a|b) or optional parts ([...]), so it is only parsed.
	synopsis bool
	// console: shown after a "$ " prompt, with want (the lines up to the
	// next prompt) as its output; "lockbox: ..." is the error main prints.
	console bool
	want    []string
}

func (c docCmd) String() string { return fmt.Sprintf("%s:%d: %s", c.file, c.line, c.text) }

// docFiles are the pages: README.md, docs/*.md and docs/containerd/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	for _, pat := range []string{"docs/*.md", "docs/containerd/*.md"} {
		m, err := filepath.Glob(filepath.Join("..", "..", pat))
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(m)
		for _, f := range m {
			rel, _ := filepath.Rel(filepath.Join("..", ".."), f)
			files = append(files, filepath.ToSlash(rel))
		}
	}
	return files
}

func readDoc(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(file)))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// block is a fenced code block: its language and its lines, numbered.
type block struct {
	lang  string
	start int // line number of the first line inside
	lines []string
}

// inlineSpan is one `inline code` span of prose.
type inlineSpan struct {
	line int
	text string
}

var inlineCode = regexp.MustCompile("`([^`]+)`")

// splitDoc returns a page's fenced blocks (``` may be indented, as in a
// list) and the inline code of the rest.
func splitDoc(lines []string) ([]block, []inlineSpan) {
	var blocks []block
	var cur *block
	prose := make([]string, len(lines)) // the page with its blocks blanked
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			if cur == nil {
				cur = &block{lang: strings.TrimPrefix(trimmed, "```"), start: i + 2}
			} else {
				blocks = append(blocks, *cur)
				cur = nil
			}
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, trimmed)
			continue
		}
		prose[i] = line
	}
	// Inline code may wrap onto the next line of a paragraph.
	text := strings.Join(prose, "\n")
	var spans []inlineSpan
	for _, m := range inlineCode.FindAllStringSubmatchIndex(text, -1) {
		spans = append(spans, inlineSpan{
			line: 1 + strings.Count(text[:m[0]], "\n"),
			text: strings.Join(strings.Fields(text[m[2]:m[3]]), " "),
		})
	}
	return blocks, spans
}

// shellBlock reports whether a block may hold commands: not a data or
// source block.
func shellBlock(lang string) bool {
	switch lang {
	case "", "sh", "shell", "bash", "console":
		return true
	}
	return false
}

// docCommands returns every lockbox command of the pages: the lines of their
// shell blocks (prompts "$ " and "# ", sudo, VAR=value assignments and
// continuation lines handled; in a pipe, the lockbox part) and their inline
// code that starts with "lockbox ".
func docCommands(t *testing.T) []docCmd {
	t.Helper()
	var cmds []docCmd
	for _, file := range docFiles(t) {
		blocks, spans := splitDoc(readDoc(t, file))
		for _, b := range blocks {
			if !shellBlock(b.lang) {
				continue
			}
			console := false
			for _, l := range b.lines {
				console = console || strings.HasPrefix(l, "$ ")
			}
			var last *docCmd
			for i := 0; i < len(b.lines); i++ {
				n, line := b.start+i, b.lines[i]
				prompt := strings.HasPrefix(line, "$ ")
				if console && !prompt {
					if last != nil {
						last.want = append(last.want, line)
					}
					continue
				}
				last = nil
				line = strings.TrimPrefix(strings.TrimPrefix(line, "$ "), "# ")
				for strings.HasSuffix(line, `\`) && i+1 < len(b.lines) {
					i++
					line = strings.TrimSuffix(line, `\`) + " " + b.lines[i]
				}
				c, ok := parseDocLine(line)
				if !ok {
					continue
				}
				c.file, c.line, c.console = file, n, console
				cmds = append(cmds, c)
				if console {
					last = &cmds[len(cmds)-1]
				}
			}
		}
		for _, s := range spans {
			if !strings.HasPrefix(s.text, "lockbox ") {
				continue
			}
			c, ok := parseDocLine(s.text)
			if !ok {
				continue
			}
			c.file, c.line, c.inline = file, s.line, true
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// shellWords splits a line as sh would, enough for the pages: '...' and
// "..." quoting, backslash escapes, and a comment from an unquoted # that
// starts a word. An unquoted | between words is returned as "|"; inside a
// word (bash|zsh) it is the pages' notation for alternatives and kept.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	flush := func() {
		if in {
			words = append(words, cur.String())
		}
		cur.Reset()
		in = false
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !in:
			flush()
			return words
		case r == '|' && !in:
			flush()
			words = append(words, "|")
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	flush()
	return words
}

var envAssign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// parseDocLine finds the lockbox command of a shell line, if it has one.
func parseDocLine(line string) (docCmd, bool) {
	words := shellWords(line)
	var segs [][]string
	start := 0
	for i, w := range words {
		if w == "|" {
			segs = append(segs, words[start:i])
			start = i + 1
		}
	}
	segs = append(segs, words[start:])
	for i, seg := range segs {
		for len(seg) > 0 && (seg[0] == "sudo" || envAssign.MatchString(seg[0])) {
			seg = seg[1:]
		}
		if len(seg) == 0 || seg[0] != "lockbox" {
			continue
		}
		c := docCmd{text: strings.TrimSpace(line)}
		if i > 0 && len(segs[i-1]) == 2 {
			switch segs[i-1][0] {
			case "printf":
				c.stdin = segs[i-1][1]
			case "echo":
				c.stdin = segs[i-1][1] + "\n"
			}
		}
		c.args, c.synopsis = synopsisArgs(seg[1:])
		return c, true
	}
	return docCmd{}, false
}

var (
	placeholderWord = regexp.MustCompile(`^[A-Z][A-Z0-9_]*(\.\.\.)?$`)
	angleWord       = regexp.MustCompile(`<[^>]*>`)
)

// synopsisArgs turns a page's notation into arguments cobra can parse:
// [optional] parts become plain words, a|b becomes a, and a lone "..."
// (more of the same) is dropped, or stands for a flag's value. It reports
// whether the notation was used or a word names something to fill in.
func synopsisArgs(words []string) ([]string, bool) {
	var args []string
	synopsis := false
	for _, w := range words {
		if strings.HasPrefix(w, "[") || strings.HasSuffix(w, "]") && !strings.HasPrefix(w, "{{") {
			if strings.HasPrefix(w, "[") || strings.Count(w, "[") < strings.Count(w, "]") {
				synopsis = true
				w = strings.TrimPrefix(w, "[")
				for strings.Count(w, "[") < strings.Count(w, "]") {
					w = strings.TrimSuffix(w, "]")
				}
			}
		}
		if !strings.Contains(w, "{{") && strings.Contains(w, "|") {
			synopsis = true
			w, _, _ = strings.Cut(w, "|")
		}
		if strings.Contains(w, "...") || angleWord.MatchString(w) ||
			!strings.HasPrefix(w, "-") && placeholderWord.MatchString(w) {
			synopsis = true
		}
		if w == "..." {
			if n := len(args); n > 0 && strings.HasPrefix(args[n-1], "-") && !strings.Contains(args[n-1], "=") {
				args = append(args, "VALUE")
			}
			continue
		}
		if w != "" {
			args = append(args, w)
		}
	}
	return args, synopsis
}

// checkDocCommand parses a page's command with the real command tree, as
// Execute would, without running it: the command path exists, every flag
// exists and takes the value given, and (for a command from a code block)
// the number of arguments is one the command accepts. It returns the
// command's path ("secret create").
func checkDocCommand(c docCmd) (string, error) {
	root := newRootCommand()
	root.InitDefaultCompletionCmd() // cobra adds it at Execute
	root.InitDefaultHelpCmd()
	cmd, rest, err := root.Find(c.args)
	if err != nil {
		return "", err
	}
	if cmd == root {
		return "", fmt.Errorf("no lockbox command %q", strings.Join(c.args, " "))
	}
	path := strings.TrimPrefix(cmd.CommandPath(), "lockbox ")
	if err := cmd.ParseFlags(rest); err != nil && !errors.Is(err, pflag.ErrHelp) {
		// Prose may name a flag without its value ("--claim-add").
		if c.inline && strings.Contains(err.Error(), "flag needs an argument") {
			return path, nil
		}
		return path, err
	}
	pos := cmd.Flags().Args()
	if cmd.HasSubCommands() && len(pos) > 0 && (!cmd.Runnable() || cmd.Args == nil) {
		return path, fmt.Errorf("lockbox %s has no subcommand %q", path, pos[0])
	}
	if c.inline {
		return path, nil // prose names commands without all their arguments
	}
	if !cmd.Runnable() {
		return path, fmt.Errorf("lockbox %s is not a command by itself", path)
	}
	if err := cmd.ValidateArgs(pos); err != nil {
		return path, err
	}
	return path, nil
}

// notYet reports a command of a verb this tree does not have yet that
// docs may show while it is being added: "context" (contexts, from issue
// 15, are documented in docs/cli.md beside their code). Any other missing
// command fails.
func notYet(c docCmd) bool {
	if len(c.args) == 0 || c.args[0] != "context" {
		return false
	}
	for _, sub := range newRootCommand().Commands() {
		if sub.Name() == "context" {
			return false
		}
	}
	return true
}

// TestDocsCommandsParse: every lockbox command the pages show, in code
// blocks and inline, parses with the real command tree.
func TestDocsCommandsParse(t *testing.T) {
	cmds := docCommands(t)
	fenced := 0
	for _, c := range cmds {
		if notYet(c) {
			t.Logf("%v: skipped: no lockbox %s command in this tree yet", c, c.args[0])
			continue
		}
		path, err := checkDocCommand(c)
		if err != nil {
			t.Errorf("%v\n\t%v", c, err)
		} else if testing.Verbose() {
			t.Logf("%v: lockbox %s %q (synopsis %v)", c, path, c.args, c.synopsis)
		}
		if !c.inline {
			fenced++
		}
	}
	t.Logf("parse-checked %d lockbox commands (%d from code blocks, %d inline)", len(cmds), fenced, len(cmds)-fenced)
	if fenced < 30 {
		t.Fatalf("found only %d lockbox commands in code blocks: is the extraction broken?", fenced)
	}
}

// The extraction itself: prompts, sudo, env, pipes, continuation lines,
// quoting and the synopsis notation.
func TestDocLineParsing(t *testing.T) {
	for _, tc := range []struct {
		line     string
		args     []string
		stdin    string
		synopsis bool
		none     bool
	}{
		{line: "lockbox secret ls", args: []string{"secret", "ls"}},
		{line: "sudo LOCKBOX_HOST=unix:///x lockbox secret ls -q | wc -l", args: []string{"secret", "ls", "-q"}},
		{line: "printf 'correct horse' | lockbox secret create db_password -", args: []string{"secret", "create", "db_password", "-"}, stdin: "correct horse"},
		{line: "echo LBXTKN-1-... | lockbox agent --token-file -", args: []string{"agent", "--token-file", "-"}, stdin: "LBXTKN-1-...\n"},
		{line: "lockbox version --format '{{.Server.Version}}'   # the server's", args: []string{"version", "--format", "{{.Server.Version}}"}},
		{line: "lockbox completion bash|zsh|fish", args: []string{"completion", "bash"}, synopsis: true},
		{line: "lockbox node rm NODE", args: []string{"node", "rm", "NODE"}, synopsis: true},
		{line: "lockbox stack deploy -c compose.yaml [-c override.yaml ...] [--prune] STACK", args: []string{"stack", "deploy", "-c", "compose.yaml", "-c", "override.yaml", "--prune", "STACK"}, synopsis: true},
		{line: "lockbox service update web --secret-add ... --secret-rm ...", args: []string{"service", "update", "web", "--secret-add", "VALUE", "--secret-rm", "VALUE"}, synopsis: true},
		{line: "lockbox service create NAME --secret source=S[,target=T][,mode=0400]", args: []string{"service", "create", "NAME", "--secret", "source=S[,target=T][,mode=0400]"}, synopsis: true},
		{line: "ctr run --runtime io.containerd.lockbox.v2 IMAGE", none: true},
		{line: "export LOCKBOX_HOST=tcp://mgr1:4242", none: true},
	} {
		c, ok := parseDocLine(tc.line)
		if ok == tc.none {
			t.Errorf("%q: found a command: %v", tc.line, ok)
			continue
		}
		if tc.none {
			continue
		}
		if strings.Join(c.args, "\x00") != strings.Join(tc.args, "\x00") || c.stdin != tc.stdin || c.synopsis != tc.synopsis {
			t.Errorf("%q: args %q stdin %q synopsis %v; want %q %q %v", tc.line, c.args, c.stdin, c.synopsis, tc.args, tc.stdin, tc.synopsis)
		}
	}
	// A flag that does not exist, a missing command, and too many
	// arguments fail.
	for _, line := range []string{"lockbox secret ls --no-such-flag", "lockbox secrets ls", "lockbox secret lss", "lockbox secret", "lockbox secret create a b c d"} {
		c, _ := parseDocLine(line)
		if _, err := checkDocCommand(c); err == nil {
			t.Errorf("%s: parsed", line)
		}
	}
}

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
		"--runtime": {rt, shimPath, wrapper},
		// containerd.md's CRI handler, the RuntimeClass's handler:
		"crictl --runtime": {"lockbox"},
		"runtime:":         {rt, wrapper},
		"runtime_type":     {rt, "io.containerd.runc.v2"},
		"WithRuntime":      {rt, "io.containerd.runc.v2"},
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
		blocks, spans := splitDoc(readDoc(t, file))
		type shown struct {
			line int
			text string
		}
		var lines []shown
		for _, b := range blocks {
			if shellBlock(b.lang) {
				for i, l := range b.lines {
					lines = append(lines, shown{b.start + i, l})
				}
			}
		}
		for _, s := range spans {
			lines = append(lines, shown{s.line, s.text})
		}
		for _, l := range lines {
			words := shellWords(strings.TrimPrefix(l.text, "$ "))
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
