package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// This file keeps README.md and docs/ honest: every lockbox command they
// show exists with the flags shown (TestDocsCommandsParse, here, on every
// platform), and the ones that name nothing to fill in run against real
// managers (TestDocsCommandsRun, docs_linux_test.go, with the ctr and crictl
// flags). docs_refs_test.go checks the names around them: runtimes, hook
// events, make targets, units, variables and flags named in prose.

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

// shownLines returns the lines of a page's shell blocks (prompt "$ "
// removed, continuation lines joined) and its inline code spans, each with
// its line number.
func shownLines(lines []string) []inlineSpan {
	blocks, spans := splitDoc(lines)
	var shown []inlineSpan
	for _, b := range blocks {
		if !shellBlock(b.lang) {
			continue
		}
		for i := 0; i < len(b.lines); i++ {
			n, l := b.start+i, strings.TrimPrefix(b.lines[i], "$ ")
			for strings.HasSuffix(l, `\`) && i+1 < len(b.lines) {
				i++
				l = strings.TrimSuffix(l, `\`) + " " + b.lines[i]
			}
			shown = append(shown, inlineSpan{n, l})
		}
	}
	return append(shown, spans...)
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
