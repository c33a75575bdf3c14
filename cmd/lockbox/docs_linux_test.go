package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docsNotRun are the code-block commands that name nothing to fill in but
// cannot run here, each with why, keyed by page and the command's text.
// Empty now: keep it short.
var docsNotRun = map[string]string{
	`docs/windows.md: lockbox agent install-service -- --manager 10.0.0.1:4243 --token-file C:\lockbox\join-token --state-dir C:\ProgramData\lockbox\agent`: "Windows only: registers a service with the SCM",
}

// docsInlineNotRun are the commands prose names without what they need
// (by command path), with why.
var docsInlineNotRun = map[string]string{
	"admin-credentials create": "needs --dir, as install.md's block gives it",
	"unlock":                   "reads the unlock key from a terminal or stdin",
	"agent ls":                 "asks a node's agent over its socket",
	"agent install-service":    "Windows only: registers a service with the SCM",
	"agent uninstall-service":  "Windows only: removes a service from the SCM",
}

// docsFixtures are the files a page's commands name, as the test has them.
var docsFixtures = map[string]map[string]string{
	"docs/compose.md": {"compose.yaml": "testdata/compose/wordpress/compose.yaml"},
	"docs/install.md": {"./api_token.txt": "testdata/docs/api_token.txt"},
}

// docsSetup are commands the test runs before a page's command, to make
// the state the page shows it in: compose.md's stack rm shows a secret
// held by a service outside the stack.
var docsSetup = map[string][][]string{
	"docs/compose.md: lockbox stack rm wp": {{"service", "create", "backup", "--secret", "wp_db_root_password"}},
}

// wantOutput matches what a console block shows after a command (its
// output, and "lockbox: " and the error, as main prints it) against what
// ran: white space compares as any white space, "..." as anything, and so
// does an abbreviated ID ("5d0c...": the ID the run made differs).
func wantOutput(want []string, out string, err error) bool {
	got := out
	if err != nil {
		got += "\nlockbox: " + err.Error()
	}
	text := strings.Join(strings.Fields(strings.Join(want, " ")), " ")
	text = abbreviatedID.ReplaceAllString(text, "...")
	var re strings.Builder
	re.WriteString(`(?s)^`)
	// "..." may stand for nothing; a word it stands beside stays a whole
	// word ("SECRETS ..." is not "SECRETSX").
	parts := strings.Split(text, "...")
	for i, part := range parts {
		if i > 0 {
			left, right := strings.HasSuffix(parts[i-1], " "), strings.HasPrefix(part, " ")
			switch {
			case left && right:
				re.WriteString(`\s(?:.*?\s)?`)
			case left:
				re.WriteString(`(?:\s.*?)?`)
			case right:
				re.WriteString(`(?:.*?\s)?`)
			default:
				re.WriteString(`.*?`)
			}
			part = strings.TrimLeft(part, " ")
		}
		if i < len(parts)-1 {
			part = strings.TrimRight(part, " ")
		}
		re.WriteString(strings.ReplaceAll(regexp.QuoteMeta(part), " ", `\s+`))
	}
	re.WriteString(`$`)
	return regexp.MustCompile(re.String()).MatchString(strings.Join(strings.Fields(got), " "))
}

var abbreviatedID = regexp.MustCompile(`\b[0-9a-f]{2,8}\.\.\.`)

func TestWantOutput(t *testing.T) {
	for _, tc := range []struct {
		want []string
		out  string
		err  error
		ok   bool
	}{
		{[]string{"NAME      SERVICES", "wp        2"}, "NAME   SERVICES\nwp     2\n", nil, true},
		{[]string{"NAME      SERVICES", "wp        2"}, "NAME   SERVICES\nwp     3\n", nil, false},
		{[]string{"lockbox: --claim: bad (...), so"}, "", errors.New("--claim: bad (a b c), so"), true},
		{[]string{"lockbox: --claim: bad (...), so"}, "", nil, false},
		{[]string{"Failed 5d0c...: in use", "lockbox: failed"}, "Failed 5d0c0123: in use\n", errors.New("failed"), true},
		{[]string{"a.b"}, "axb", nil, false},
		{[]string{"ID NAME", "..."}, "ID   NAME\n", nil, true},
		{[]string{"ID NAME", "..."}, "ID   NAME\nx y\n", nil, true},
		{[]string{"ID NAME", "..."}, "ID   NAMES\nx y\n", nil, false},
		{[]string{"a ... b"}, "a b", nil, true},
		{[]string{"a ... b"}, "a x y b", nil, true},
		{[]string{"a ... b"}, "ax b", nil, false},
		{[]string{"ID NAME", "..."}, "NAME ID\n", nil, false},
		{[]string{"Failed 5d0c...: in use"}, "Failed 70tb1tqonu2ap: in use", nil, true},
		{[]string{"Failed 5d0c...: in use"}, "Failed 70tb1tqonu2ap: in use by", nil, false},
	} {
		if got := wantOutput(tc.want, tc.out, tc.err); got != tc.ok {
			t.Errorf("wantOutput(%q, %q, %v) = %v", tc.want, tc.out, tc.err, got)
		}
	}
}

// TestDocsCommandsRun runs, against real managers and in the pages'
// order, every lockbox command of a code block that names nothing to fill
// in and starts no daemon, and the complete ones prose names: unlock-key on
// an autolock manager, the rest on one without. A command shown with its output (a "$ " console block)
// must print it, an error included; any other must succeed.
func TestDocsCommandsRun(t *testing.T) {
	// Commands that keep client settings (contexts) write under a
	// temporary home, never the user's.
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	var cmds []docCmd
	for _, c := range docCommands(t) {
		if !notYet(c) {
			cmds = append(cmds, c)
		}
	}
	for _, c := range cmds {
		if _, err := checkDocCommand(c); err != nil {
			t.Fatalf("%v\n\t%v (TestDocsCommandsParse)", c, err)
		}
	}
	plainHost, plainAddr, _, _ := runManagerCLI(t, filepath.Join(t.TempDir(), "data"))
	lockedHost, _, _, _ := runManagerCLI(t, filepath.Join(t.TempDir(), "data"), "--autolock")
	plain, locked := &cliEnv{host: plainHost}, &cliEnv{host: lockedHost}
	// The pages' first manager, mgr1, over TCP, with admin credentials
	// issued into ~/.lockbox as install.md issues them.
	creds := filepath.Join(home, ".lockbox")
	plain.mustRun(t, "", "admin-credentials", "create", "--dir", creds)
	everywhere := map[string]string{
		"tcp://mgr1:4242": "tcp://" + plainAddr,
		"ca.pem":          filepath.Join(creds, "ca.pem"),
		"cert.pem":        filepath.Join(creds, "cert.pem"),
		"key.pem":         filepath.Join(creds, "key.pem"),
	}
	ran, parsed, ranInline := 0, 0, 0
	for _, c := range cmds {
		if !c.inline {
			parsed++
		}
		path, _ := checkDocCommand(c)
		key := c.file + ": " + c.text
		switch {
		case c.synopsis:
			continue // names something to fill in
		case path == "manager" || path == "agent":
			continue // starts a daemon
		case docsNotRun[key] != "":
			t.Logf("%v: not run: %s", c, docsNotRun[key])
			continue
		case c.inline && docsInlineNotRun[path] != "":
			continue
		}
		if c.inline {
			// Prose names commands; it runs those given all they need.
			if _, err := checkDocCommand(docCmd{args: c.args}); err != nil {
				continue
			}
			ranInline++
		}
		e := plain
		if strings.HasPrefix(path, "unlock-key") {
			e = locked
		}
		args := append([]string(nil), c.args...)
		for i, a := range args {
			if f, ok := docsFixtures[c.file][a]; ok {
				args[i] = f
			} else if f, ok := everywhere[a]; ok {
				args[i] = f
			} else if strings.HasPrefix(a, "~/") {
				args[i] = filepath.Join(home, a[2:]) // as sh expands it
			}
		}
		for _, setup := range docsSetup[key] {
			e.mustRun(t, "", setup...)
		}
		out, err := e.run(t, c.stdin, args...)
		ran++
		if testing.Verbose() {
			t.Logf("%v: ran lockbox %s: %v", c, strings.Join(args, " "), err)
		}
		switch {
		case c.console && !wantOutput(c.want, out, err):
			t.Errorf("%v\n\tthe page shows:\n%s\n\tit printed:\n%s\n\terror: %v", c, strings.Join(c.want, "\n"), out, err)
		case !c.console && err != nil:
			t.Errorf("%v\n\t%v\n%s", c, err, out)
		}
	}
	t.Logf("code-block commands: %d parse-checked, %d run against a manager; and %d commands named in prose run",
		parsed, ran-ranInline, ranInline)
	if ran-ranInline < 20 || ranInline < 10 {
		t.Fatalf("ran only %d of the pages' commands", ran)
	}
}

// TestDocsContainerdToolFlags: the ctr and crictl commands the pages show
// use subcommands and flags those tools have (the ones hack/deps.sh
// installs: ctr of containerd 2.4.2, crictl). They are not run: that
// needs containerd (integration/ starts containers the same ways).
func TestDocsContainerdToolFlags(t *testing.T) {
	toolsPath(t, "ctr", "crictl")
	subWord := regexp.MustCompile(`^[a-z][a-z-]*$`)
	help := map[string]string{}
	checked := 0
	for _, file := range docFiles(t) {
		lines := shownLines(readDoc(t, file))
		for _, l := range lines {
			words := shellWords(l.text)
			if len(words) < 2 || words[0] != "ctr" && words[0] != "crictl" {
				continue
			}
			var sub []string
			for _, w := range words[1:] {
				if !subWord.MatchString(w) || len(sub) == 2 {
					break
				}
				sub = append(sub, w)
			}
			// The longest subcommand path the tool knows; a shorter one
			// that has subcommands of its own means a misspelt one.
			var out string
			full := len(sub)
			for ; len(sub) > 0; sub = sub[:len(sub)-1] {
				key := words[0] + " " + strings.Join(sub, " ")
				if h, ok := help[key]; ok {
					out = h
					break
				}
				b, err := exec.Command(words[0], append(sub, "--help")...).CombinedOutput()
				if err == nil && !strings.Contains(string(b), "No help topic") {
					help[key], out = string(b), string(b)
					break
				}
			}
			if out == "" || len(sub) < full && strings.Contains(out, "\nCOMMANDS:") {
				t.Errorf("%s:%d: %s: %s has no such command", file, l.line, l.text, words[0])
				continue
			}
			for _, w := range words[1:] {
				if !strings.HasPrefix(w, "--") || w == "--" {
					continue
				}
				flag, _, _ := strings.Cut(w, "=")
				if !regexp.MustCompile(`(^|[\s,])` + regexp.QuoteMeta(flag) + `([\s,=]|$)`).MatchString(out) {
					t.Errorf("%s:%d: %s: %s %s has no flag %s", file, l.line, l.text, words[0], strings.Join(sub, " "), flag)
				}
				checked++
			}
		}
	}
	t.Logf("checked %d ctr and crictl flags against %d help pages", checked, len(help))
	if checked < 10 {
		t.Fatalf("checked only %d flags: is the extraction broken?", checked)
	}
}
