//go:build linux

package shim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Runtime options. The runc shim underneath reads only runc's options
// (containerd.runc.v1.Options): at create (its unchecked type assertion
// panics on anything else), in the manager's start (the shim's cgroup) and
// in -info (runc's features). containerd sends runc's options only for
// runc's own runtime type; for io.containerd.lockbox.v2 its CRI sends a
// runtimeoptions.v1.Options whose TOML body is the runtime's options table
//
//	[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.lockbox.options]
//	  BinaryName = "/usr/bin/runc"
//	  SystemdCgroup = true
//
// (or a ConfigPath naming a file with the same keys). The shim turns that
// into runc's options at each of the three places, decoding the table as
// containerd's CRI decodes it for runc (go-toml, field names matched
// case-insensitively), but strictly: a key runc's options do not have is
// an error naming it, not a setting silently dropped.

// runcOptionsAny returns the options to hand the runc shim for a: a itself
// when it is empty or already runc's (passed through as sent), runc's
// options translated from a runtimeoptions.v1.Options, or an error for
// anything else.
func runcOptionsAny(a *anypb.Any) (*anypb.Any, error) {
	if isEmptyAny(a) || a.MessageIs((*runcoptions.Options)(nil)) {
		return a, nil
	}
	o, err := runcOptions(a)
	if err != nil {
		return nil, err
	}
	return anypb.New(o)
}

// runcOptions decodes a into runc's options: nil for no options (the runc
// shim's defaults).
func runcOptions(a *anypb.Any) (*runcoptions.Options, error) {
	switch {
	case isEmptyAny(a):
		return nil, nil
	case a.MessageIs((*runcoptions.Options)(nil)):
		o := &runcoptions.Options{}
		if err := a.UnmarshalTo(o); err != nil {
			return nil, fmt.Errorf("runtime options: %w", err)
		}
		return o, nil
	case a.MessageIs((*runtimeoptions.Options)(nil)):
		ro := &runtimeoptions.Options{}
		if err := a.UnmarshalTo(ro); err != nil {
			return nil, fmt.Errorf("runtime options: %w", err)
		}
		return fromRuntimeOptions(ro)
	}
	return nil, fmt.Errorf("runtime options of type %q: %s takes runc's options (%s) or a TOML table of them (%s)",
		a.GetTypeUrl(), RuntimeType, runcOptionsName, runtimeOptionsName)
}

var (
	runcOptionsName    = string(proto.MessageName((*runcoptions.Options)(nil)))
	runtimeOptionsName = string(proto.MessageName((*runtimeoptions.Options)(nil)))
)

func isEmptyAny(a *anypb.Any) bool {
	return a.GetTypeUrl() == "" && len(a.GetValue()) == 0
}

// fromRuntimeOptions decodes the TOML of ro: the file at ConfigPath when
// it names one (containerd then sends no body), else ConfigBody.
func fromRuntimeOptions(ro *runtimeoptions.Options) (*runcoptions.Options, error) {
	if u := ro.GetTypeUrl(); u != "" && u != runcOptionsName && !strings.HasSuffix(u, "/"+runcOptionsName) {
		return nil, fmt.Errorf("runtime options: TypeUrl %q: %s takes only runc's options (%s)", u, RuntimeType, runcOptionsName)
	}
	body, src := ro.GetConfigBody(), "the runtime's options table"
	if p := ro.GetConfigPath(); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("runtime options: ConfigPath: %w", err)
		}
		body, src = b, p
	}
	return decodeRuncTOML(body, src)
}

// tomlOptions is what a runtime's options table may hold: runc's options,
// and the two keys containerd itself reads from that table into
// runtimeoptions.v1.Options (and so finds again in the body it passes on).
type tomlOptions struct {
	runcoptions.Options
	TypeUrl    string
	ConfigPath string
}

// decodeRuncTOML decodes body (from src, for errors) into runc's options.
func decodeRuncTOML(body []byte, src string) (*runcoptions.Options, error) {
	var t tomlOptions
	err := toml.NewDecoder(bytes.NewReader(body)).DisallowUnknownFields().Decode(&t)
	var sme *toml.StrictMissingError
	if errors.As(err, &sme) {
		var keys []string
		for _, e := range sme.Errors {
			keys = append(keys, fmt.Sprintf("%q", strings.Join(e.Key(), ".")))
		}
		what := "key"
		if len(keys) > 1 {
			what = "keys"
		}
		return nil, fmt.Errorf("runtime options in %s: unknown %s %s: %s takes runc's options (%s)",
			src, what, strings.Join(keys, ", "), RuntimeType, strings.Join(runcOptionKeys(), ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("runtime options in %s: %w", src, err)
	}
	return &t.Options, nil
}

// runcOptionKeys lists the keys of runc's options, for errors: the
// exported fields of the generated type, so that the list cannot drift
// from what the decoder accepts.
func runcOptionKeys() []string {
	var keys []string
	rt := reflect.TypeOf(runcoptions.Options{})
	for i := range rt.NumField() {
		if f := rt.Field(i); f.IsExported() {
			keys = append(keys, f.Name)
		}
	}
	return keys
}

// translateBootstrap replaces a runtimeoptions.v1.Options extension of the
// shim's start parameters with runc's options, where the runc manager's
// start looks for them (the shim's cgroup).
func translateBootstrap(p *bootapi.BootstrapParams) error {
	for _, ext := range p.GetExtensions() {
		if !ext.GetValue().MessageIs((*runtimeoptions.Options)(nil)) {
			continue
		}
		a, err := runcOptionsAny(ext.GetValue())
		if err != nil {
			return err
		}
		ext.Value = a
	}
	return nil
}

// translateInfo reads the options containerd writes to -info's stdin (a
// marshalled Any, or nothing) and returns them as the runc manager's Info
// reads them.
func translateInfo(r io.Reader) (io.Reader, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read runtime options: %w", err)
	}
	if len(data) == 0 {
		return bytes.NewReader(nil), nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("decode runtime options: %w", err)
	}
	if !a.MessageIs((*runtimeoptions.Options)(nil)) {
		return bytes.NewReader(data), nil
	}
	out, err := runcOptionsAny(&a)
	if err != nil {
		return nil, err
	}
	b, err := proto.Marshal(out)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}
