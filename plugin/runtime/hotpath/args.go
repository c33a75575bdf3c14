package hotpath

import (
	"fmt"
	"strings"
)

// Invocation is what the wrapper needs to know about one runc command line.
// Args always holds the original arguments (without argv[0]) so that the
// real runc can be called with exactly what the caller passed.
type Invocation struct {
	Args []string

	// Global flags that the wrapper reuses when it has to call runc itself
	// (a "delete --force" after a failed prepare) or report an error the way
	// runc does.
	Root      string
	Log       string
	LogFormat string
	// Globals holds the global flags verbatim, in order, for those calls.
	Globals []string

	// Command is the runc subcommand ("create", "delete", ...); empty when
	// runc is called with global flags only (runc --version).
	Command string
	// ID is the container ID: the last positional argument of commands that
	// take one.
	ID string

	// Flags of create and run.
	Bundle      string
	PidFile     string
	PreserveFDs int
	Detach      bool

	// Flag of delete.
	Force bool
}

// flagKind says whether a flag consumes the next argument.
type flagKind int

const (
	boolFlag flagKind = iota
	valueFlag
)

// runc's global flags (runc 1.1 and later; crun accepts the same spellings
// for the ones containerd passes). Flags not listed are treated as boolean:
// guessing a value flag wrong would misplace the subcommand.
var globalFlags = map[string]flagKind{
	"debug":          boolFlag,
	"log":            valueFlag,
	"log-format":     valueFlag,
	"root":           valueFlag,
	"criu":           valueFlag,
	"systemd-cgroup": boolFlag,
	"rootless":       valueFlag,
	"cgroup-manager": valueFlag, // crun
	"help":           boolFlag,
	"h":              boolFlag,
	"version":        boolFlag,
	"v":              boolFlag,
}

var createFlags = map[string]flagKind{
	"bundle":         valueFlag,
	"b":              valueFlag,
	"console-socket": valueFlag,
	"pidfd-socket":   valueFlag,
	"pid-file":       valueFlag,
	"no-pivot":       boolFlag,
	"no-new-keyring": boolFlag,
	"preserve-fds":   valueFlag,
	// run only
	"detach":       boolFlag,
	"d":            boolFlag,
	"keep":         boolFlag,
	"no-subreaper": boolFlag,
}

var deleteFlags = map[string]flagKind{
	"force": boolFlag,
	"f":     boolFlag,
}

// ParseError says which argument could not be understood.
type ParseError struct {
	Arg    string
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("runc arguments: %q: %s", e.Arg, e.Reason)
}

// Parse reads a runc command line (without argv[0]). It understands the
// spellings runc's CLI library accepts: "--flag value", "--flag=value",
// "-flag value" and "-flag=value".
func Parse(args []string) (*Invocation, error) {
	inv := &Invocation{Args: args}
	i := 0
	for ; i < len(args); i++ {
		name, value, hasValue, ok := splitFlag(args[i])
		if !ok {
			break
		}
		start := i
		if globalFlags[name] == valueFlag && !hasValue {
			if i+1 >= len(args) {
				return nil, &ParseError{Arg: args[i], Reason: "flag needs a value"}
			}
			i++
			value = args[i]
		}
		inv.Globals = append(inv.Globals, args[start:i+1]...)
		switch name {
		case "root":
			inv.Root = value
		case "log":
			inv.Log = value
		case "log-format":
			inv.LogFormat = value
		}
	}
	if i == len(args) {
		return inv, nil
	}
	inv.Command = args[i]
	rest := args[i+1:]

	var flags map[string]flagKind
	switch inv.Command {
	case "create", "run":
		flags = createFlags
	case "delete":
		flags = deleteFlags
	default:
		// The wrapper acts on create, run and delete only; everything else
		// goes to runc untouched, so its flags need no understanding.
		return inv, nil
	}

	var positional []string
	for j := 0; j < len(rest); j++ {
		arg := rest[j]
		if arg == "--" {
			positional = append(positional, rest[j+1:]...)
			break
		}
		name, value, hasValue, ok := splitFlag(arg)
		if !ok {
			positional = append(positional, arg)
			continue
		}
		if flags[name] == valueFlag && !hasValue {
			if j+1 >= len(rest) {
				return nil, &ParseError{Arg: arg, Reason: "flag needs a value"}
			}
			j++
			value = rest[j]
		}
		switch name {
		case "bundle", "b":
			inv.Bundle = value
		case "pid-file":
			inv.PidFile = value
		case "preserve-fds":
			n, err := parseCount(value)
			if err != nil {
				return nil, &ParseError{Arg: arg, Reason: err.Error()}
			}
			inv.PreserveFDs = n
		case "detach", "d":
			inv.Detach = boolValue(value, hasValue)
		case "force", "f":
			inv.Force = boolValue(value, hasValue)
		}
	}
	// runc takes exactly one container ID and reads it after the flags.
	if len(positional) != 1 {
		return nil, &ParseError{Arg: strings.Join(rest, " "), Reason: fmt.Sprintf("%s needs exactly one container ID", inv.Command)}
	}
	inv.ID = positional[0]
	if inv.ID == "" {
		return nil, &ParseError{Arg: inv.ID, Reason: "empty container ID"}
	}
	return inv, nil
}

// splitFlag splits "-name", "--name" and "--name=value". ok is false for a
// positional argument (including "-" alone).
func splitFlag(arg string) (name, value string, hasValue, ok bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", "", false, false
	}
	name = strings.TrimPrefix(arg[1:], "-")
	if name == "" {
		return "", "", false, false
	}
	if k := strings.IndexByte(name, '='); k >= 0 {
		return name[:k], name[k+1:], true, true
	}
	return name, "", false, true
}

func boolValue(value string, hasValue bool) bool {
	if !hasValue {
		return true
	}
	switch value {
	case "false", "0", "f", "F", "FALSE", "False":
		return false
	}
	return true
}

func parseCount(s string) (int, error) {
	n := 0
	if s == "" {
		return 0, fmt.Errorf("not a number")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a number")
		}
		n = n*10 + int(c-'0')
		if n > 1<<16 {
			return 0, fmt.Errorf("too large")
		}
	}
	return n, nil
}
