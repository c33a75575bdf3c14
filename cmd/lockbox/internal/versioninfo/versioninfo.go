// Package versioninfo is what "lockbox version" prints, in docker
// version's shape and field names, so that --format templates carry over
// ({{.Client.Version}}, {{.Server.GitCommit}}). The full lockbox build adds
// the manager's side; the node build (cmd/lockbox/node) has the client's
// alone.
package versioninfo

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lockbox-project/lockbox/internal/buildinfo"
)

// Info is one side of lockbox version.
type Info struct {
	Version   string
	GitCommit string
	GoVersion string
	Os        string
	Arch      string
	BuildTime string `json:",omitempty"`
}

// Output is what --format sees; Server is nil when no manager answered (or
// the build has no manager to ask).
type Output struct {
	Client Info
	Server *Info
}

// Client is this binary's side.
func Client() Info {
	i := buildinfo.Get()
	return Info{Version: i.Version, GitCommit: i.ShortCommit(), GoVersion: i.GoVersion, Os: i.OS, Arch: i.Arch, BuildTime: i.BuildTime}
}

// Write writes v as docker version's text: a Client section, then the
// manager's Server section when there is one.
func Write(w io.Writer, v Output) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	section := func(title string, i Info) {
		fmt.Fprintln(tw, title)
		fmt.Fprintf(tw, " Version:\t%s\n", i.Version)
		fmt.Fprintf(tw, " Go version:\t%s\n", i.GoVersion)
		fmt.Fprintf(tw, " Git commit:\t%s\n", i.GitCommit)
		if i.BuildTime != "" {
			fmt.Fprintf(tw, " Built:\t%s\n", i.BuildTime)
		}
		fmt.Fprintf(tw, " OS/Arch:\t%s/%s\n", i.Os, i.Arch)
	}
	section("Client:", v.Client)
	if v.Server != nil {
		fmt.Fprintln(tw)
		section("Server: Lockbox manager", *v.Server)
	}
	return tw.Flush()
}

// Print writes v as --format asks: docker version's text when format is
// empty, one JSON object for "json", else through template, the build's
// own --format executor (the full build's has the admin CLI's docker-like
// functions; the node build's text/template's own only).
func Print(w io.Writer, format string, v Output, template func(w io.Writer, format string, v Output) error) error {
	switch format {
	case "":
		return Write(w, v)
	case "json":
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	default:
		return template(w, format, v)
	}
}
