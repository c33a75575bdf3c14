package daemonflags

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/spf13/pflag"
)

// JoinTokenEnv is the environment variable that used to carry a join token.
// It is refused: /proc/PID/environ keeps a process's initial environment
// for its whole life, even after unsetenv, so a daemon cannot make it safe.
const JoinTokenEnv = "LOCKBOX_JOIN_TOKEN"

// maxTokenFile bounds what --token-file reads: a token is ~110 bytes.
const maxTokenFile = 4 << 10

// Token is how a daemon takes a join token: --token-file FILE, or - for
// stdin. A token on the command line sits in /proc/PID/cmdline, readable by
// every local user, for as long as the daemon runs, so --token is kept only
// to tell old scripts what to use instead.
type Token struct {
	file    string
	retired string
}

// Add declares the flags on f; usage says what the file holds.
func (t *Token) Add(f *pflag.FlagSet, usage string) {
	f.StringVar(&t.file, "token-file", "", usage+" (read once at start; - reads stdin)")
	f.StringVar(&t.retired, "token", "", "retired: use --token-file")
	f.MarkHidden("token")
}

// Check refuses the retired ways of passing a token. It runs before
// anything else, so that the process exits at once.
func (t *Token) Check(f *pflag.FlagSet) error {
	if f.Changed("token") {
		return errors.New("--token is no longer accepted: a token in the command line stays readable by every local user in /proc/PID/cmdline while the daemon runs. " +
			"Put the token in a file only root can read and pass --token-file FILE, or pipe it in with --token-file - (for example: lockbox join-token -q worker | ssh node lockbox agent ... --token-file -)")
	}
	if _, ok := os.LookupEnv(JoinTokenEnv); ok {
		return fmt.Errorf("%s is no longer read, and refused: a process's initial environment stays readable in /proc/PID/environ for its whole life. "+
			"Unset it and pass the token with --token-file FILE or --token-file -", JoinTokenEnv)
	}
	return nil
}

// private refuses a regular token file that other users can read: that
// would expose the token as the command line did. Pipes (--token-file
// <(...)) and Windows, whose ACLs a mode does not describe, pass.
func private(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	if runtime.GOOS != "windows" && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("--token-file %s: mode %#o lets other users read the token; chmod 600 it (and consider the token leaked: rotate it with 'lockbox join-token --rotate')", f.Name(), fi.Mode().Perm())
	}
	return nil
}

// Read returns the token from --token-file (nil without one): read once,
// surrounding white space trimmed. The caller zeroes it when done; read
// zeroes its own buffer.
func (t *Token) Read(stdin io.Reader) ([]byte, error) {
	if t.file == "" {
		return nil, nil
	}
	name := t.file
	var r io.Reader = stdin
	if t.file == "-" {
		name = "standard input"
	} else {
		f, err := os.Open(t.file)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		defer f.Close()
		if err := private(f); err != nil {
			return nil, err
		}
		r = f
	}
	buf := make([]byte, maxTokenFile+1)
	defer clear(buf)
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
	case err != nil:
		return nil, fmt.Errorf("--token-file: read %s: %w", name, err)
	case n > maxTokenFile:
		return nil, fmt.Errorf("--token-file: %s holds more than %d bytes: it is not a join token", name, maxTokenFile)
	}
	tok := bytes.TrimSpace(buf[:n])
	if len(tok) == 0 {
		return nil, fmt.Errorf("--token-file: %s is empty: it must hold the join token", name)
	}
	return bytes.Clone(tok), nil
}
