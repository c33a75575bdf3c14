package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	composetypes "github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/api/validation"
	"github.com/lockbox-project/lockbox/manager/constraint"
)

// Reading a compose file into what "stack deploy" creates: the stack's
// secrets and its services, named and labelled as "docker stack deploy"
// names and labels them (docker/cli cli/compose/convert), so that a
// swarm user's files and habits carry over. Only the secrets and the
// services' secret references and placement constraints are Lockbox's;
// everything else in the file (image, ports, volumes, ...) is what
// nerdctl compose or another containerd client runs, and is ignored.

// stackLabel is docker's label on every object a stack creates; stack ls
// and stack rm find a stack's objects by it.
const stackLabel = "com.docker.stack.namespace"

// stackSecret is one top-level secret of a compose file.
type stackSecret struct {
	key      string // the compose key, as services name it
	name     string // the Lockbox secret's name
	external bool   // must exist already; never created, updated or removed
	origin   string // where the data came from, for messages (never the data)
	data     []byte
	labels   map[string]string
}

// stackPlan is what a compose file asks of Lockbox. Its secrets hold
// data: call wipe when done.
type stackPlan struct {
	stack    string
	secrets  []*stackSecret       // sorted by name
	services []*types.ServiceSpec // sorted by name
	warnings []string
}

func (p *stackPlan) wipe() {
	for _, s := range p.secrets {
		clear(s.data)
	}
}

// scoped is docker's name for a stack's object: STACK_NAME.
func scoped(stack, name string) string { return stack + "_" + name }

// checkStackName refuses a stack name that cannot prefix Lockbox names.
// Docker accepts nearly anything and fails later on the objects' names;
// here the error comes first and says why.
func checkStackName(stack string) error {
	if !validation.ValidName(stack) {
		return fmt.Errorf("invalid stack name %q: the stack's secrets and services are named STACK_NAME, so it must be a valid name itself: %s", stack, validation.NameRule)
	}
	return nil
}

// composeFile is one -c argument: a path, or "-" with the content read
// from standard input.
type composeFile struct {
	path    string
	content []byte
}

// readComposeFiles reads every -c argument, so that the mode check and
// the loader see the same bytes.
func readComposeFiles(paths []string, stdin io.Reader) ([]composeFile, error) {
	if len(paths) == 0 {
		return nil, errors.New("specify a compose file (with --compose-file or -c)")
	}
	out := make([]composeFile, 0, len(paths))
	for _, p := range paths {
		var b []byte
		var err error
		if p == "-" {
			b, err = io.ReadAll(stdin)
		} else {
			b, err = os.ReadFile(p)
		}
		if err != nil {
			return nil, fmt.Errorf("read compose file: %w", err)
		}
		out = append(out, composeFile{path: p, content: b})
	}
	return out, nil
}

// loadCompose reads compose files with the compose-spec library, as
// docker compose and nerdctl compose do: merged in order, ${VAR}
// interpolated from env, relative paths resolved against the first
// file's directory (the current one for "-").
//
// Docker's naming is applied by planStack, not by the library: its
// normalisation names an unnamed secret PROJECT_KEY after a lower-cased
// project name, and its defaults turn a short reference's target into
// /run/secrets/KEY, after which an explicit name or target could not be
// told from a generated one. Profiles are all enabled (docker stack
// deploy has none), and services' env_file and label_file are not read:
// they are the container runtime's business, and may not exist here.
func loadCompose(ctx context.Context, stack string, files []composeFile, env map[string]string) (*composetypes.Project, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	details := composetypes.ConfigDetails{Environment: env}
	for i, f := range files {
		name := f.path
		if f.path != "-" {
			if name, err = filepath.Abs(f.path); err != nil {
				return nil, err
			}
			if i == 0 {
				wd = filepath.Dir(name)
			}
		}
		details.ConfigFiles = append(details.ConfigFiles, composetypes.ConfigFile{Filename: name, Content: f.content})
	}
	details.WorkingDir = wd
	project := loader.NormalizeProjectName(stack)
	if project == "" {
		project = "stack"
	}
	p, err := loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.SetProjectName(project, true)
		o.SkipNormalization = true
		o.SkipDefaultValues = true
		o.SkipResolveEnvironment = true
		o.SkipResolveLabels = true
		o.Profiles = []string{"*"}
	})
	if err != nil {
		return nil, fmt.Errorf("compose file: %w", err)
	}
	return p, nil
}

// planStack turns a loaded project into the stack's secrets and
// services. File and environment secrets are read here, before anything
// is sent, so that a bad file leaves the cluster untouched.
func planStack(stack string, p *composetypes.Project, lookupEnv func(string) (string, bool)) (plan *stackPlan, err error) {
	plan = &stackPlan{stack: stack}
	defer func() {
		if err != nil {
			plan.wipe()
			plan = nil
		}
	}()
	byKey := map[string]*stackSecret{}
	for _, key := range slices.Sorted(maps.Keys(p.Secrets)) {
		s, err := planSecret(stack, key, p.Secrets[key], lookupEnv)
		if err != nil {
			return plan, err
		}
		byKey[key] = s
		plan.secrets = append(plan.secrets, s)
	}
	slices.SortFunc(plan.secrets, func(a, b *stackSecret) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(plan.secrets); i++ {
		if a, b := plan.secrets[i-1], plan.secrets[i]; a.name == b.name {
			return plan, fmt.Errorf("secrets %q and %q both name the secret '%s'", a.key, b.key, a.name)
		}
	}

	services := p.AllServices()
	for _, key := range slices.Sorted(maps.Keys(services)) {
		spec, err := planService(stack, services[key], byKey)
		if err != nil {
			return plan, err
		}
		plan.services = append(plan.services, spec)
	}
	if len(p.Configs) > 0 || slices.ContainsFunc(slices.Collect(maps.Values(services)), func(s composetypes.ServiceConfig) bool { return len(s.Configs) > 0 }) {
		plan.warnings = append(plan.warnings, "configs: ignored: Lockbox keeps secrets only; nerdctl compose mounts configs from their host files when it runs the containers")
	}
	if len(p.Jobs)+len(p.DisabledJobs) > 0 {
		plan.warnings = append(plan.warnings, "jobs: ignored: docker stack deploy has no jobs; give a job's secrets to a service and let the job's container claim it")
	}
	return plan, nil
}

// planSecret reads one top-level secret.
func planSecret(stack, key string, c composetypes.SecretConfig, lookupEnv func(string) (string, bool)) (*stackSecret, error) {
	if err := refuseComposeDrivers(key, c); err != nil {
		return nil, err
	}
	s := &stackSecret{key: key, name: c.Name, external: bool(c.External)}
	if s.external {
		// docker: an external secret is found by its name, or its key.
		if s.name == "" {
			s.name = key
		}
		if c.File != "" || c.Environment != "" {
			return nil, fmt.Errorf("secrets.%s: external: true takes no file: or environment: (an external secret exists already)", key)
		}
		return s, nil
	}
	if s.name == "" {
		s.name = scoped(stack, key)
	}
	if !validation.ValidName(s.name) {
		return nil, fmt.Errorf("secrets.%s: the secret's name %q is invalid (%s)", key, s.name, validation.NameRule)
	}
	s.labels = map[string]string{}
	maps.Copy(s.labels, c.Labels)
	s.labels[stackLabel] = stack

	var err error
	switch {
	case c.File != "" && c.Environment != "":
		return nil, fmt.Errorf("secrets.%s: give file: or environment:, not both", key)
	case c.File != "":
		s.origin = "file " + c.File
		s.data, err = readStackSecretFile(c.File)
	case c.Environment != "":
		s.origin = "environment variable " + c.Environment
		v, ok := lookupEnv(c.Environment)
		if !ok {
			return nil, fmt.Errorf("secrets.%s: environment variable %s is not set", key, c.Environment)
		}
		s.data = []byte(v)
		err = checkStackSecretSize(len(s.data), s.origin)
	default:
		return nil, fmt.Errorf("secrets.%s: give file:, environment: or external: true", key)
	}
	if err != nil {
		clear(s.data)
		return nil, fmt.Errorf("secrets.%s: %w", key, err)
	}
	return s, nil
}

// refuseComposeDrivers: Lockbox stores the data itself; drivers and
// templating, which would take it from elsewhere or rewrite it per task,
// are refused rather than ignored, since ignoring them would store
// something other than what the file means.
func refuseComposeDrivers(key string, c composetypes.SecretConfig) error {
	field := func(f string) string { return fmt.Sprintf("secrets.%s.%s", key, f) }
	switch {
	case c.Driver != "":
		return fmt.Errorf("%s: %q: Lockbox has no secret drivers (yet): it keeps the data itself; give the data with file: or environment:, or create the secret with 'lockbox secret create' and declare it external: true", field("driver"), c.Driver)
	case len(c.DriverOpts) > 0:
		return fmt.Errorf("%s: Lockbox has no secret drivers (yet), so driver options mean nothing to it", field("driver_opts"))
	case c.TemplateDriver != "":
		return fmt.Errorf("%s: %q: Lockbox does not template secrets: a container receives the secret's bytes as stored", field("template_driver"), c.TemplateDriver)
	}
	return nil
}

// readStackSecretFile reads a secret's file, at most one byte past the
// limit, so that a huge file is refused without being loaded.
func readStackSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, validation.MaxSecretSize))
	if err == nil {
		err = checkStackSecretSize(len(data), "file "+path)
	}
	if err != nil {
		clear(data)
		return nil, err
	}
	return data, nil
}

func checkStackSecretSize(n int, origin string) error {
	if validation.ValidSecretSize(int64(n)) {
		return nil
	}
	if n == 0 {
		return fmt.Errorf("%s is empty: a secret holds 1 to %d bytes", origin, validation.MaxSecretSize-1)
	}
	return fmt.Errorf("%s holds %d bytes or more: a secret must be smaller than %d bytes (500 KiB)", origin, validation.MaxSecretSize, validation.MaxSecretSize)
}

// planService is one compose service as a Lockbox service STACK_SERVICE.
func planService(stack string, svc composetypes.ServiceConfig, secrets map[string]*stackSecret) (*types.ServiceSpec, error) {
	spec := &types.ServiceSpec{Name: scoped(stack, svc.Name), Labels: map[string]string{}}
	if !validation.ValidName(spec.Name) {
		return nil, fmt.Errorf("service %q: the service's name %q is invalid (%s)", svc.Name, spec.Name, validation.NameRule)
	}
	if svc.Deploy != nil {
		maps.Copy(spec.Labels, svc.Deploy.Labels)
		for _, c := range svc.Deploy.Placement.Constraints {
			parsed, err := constraint.Parse(c)
			if err != nil {
				return nil, fmt.Errorf("service %q: deploy.placement.constraints: %w", svc.Name, err)
			}
			if spec.Placement == nil {
				spec.Placement = &types.Placement{}
			}
			spec.Placement.Constraints = append(spec.Placement.Constraints, parsed.String())
		}
	}
	spec.Labels[stackLabel] = stack
	for i, r := range svc.Secrets {
		s := secrets[r.Source]
		if s == nil { // the loader's consistency check makes this unreachable
			return nil, fmt.Errorf("service %q: secrets[%d]: undefined secret %q", svc.Name, i, r.Source)
		}
		ref, err := stackSecretRef(r, s)
		if err != nil {
			return nil, fmt.Errorf("service %q: secret %q: %w", svc.Name, r.Source, err)
		}
		spec.Secrets = append(spec.Secrets, ref)
	}
	// docker sorts a service's references by secret name, so that the
	// order in the file does not make a redeploy an update.
	slices.SortStableFunc(spec.Secrets, func(a, b *types.SecretReference) int { return strings.Compare(a.SecretName, b.SecretName) })
	return spec, nil
}

// stackSecretRef is docker's reference: the target defaults to the
// compose key (not the secret's STACK_KEY name), so that a container
// finds /run/secrets/db_password whatever the stack is called.
func stackSecretRef(r composetypes.ServiceSecretConfig, s *stackSecret) (*types.SecretReference, error) {
	t := &types.FileTarget{Name: r.Target, Uid: r.UID, Gid: r.GID}
	if t.Name == "" {
		t.Name = r.Source
	}
	if r.Mode != nil {
		m, err := stackFileMode(int64(*r.Mode))
		if err != nil {
			return nil, err
		}
		t.Mode = m
	}
	return &types.SecretReference{SecretName: s.name, Target: t}, nil
}

// stackFileMode checks a mode as compose-go gives it: the number YAML
// read (0440 and 0o440 are octal there, 288 decimal: all 0440).
// Lockbox's zero means "the default 0444", so a mode of 0 (which docker
// would apply: an unreadable file) is refused rather than changed.
func stackFileMode(m int64) (uint32, error) {
	switch {
	case m == 0:
		return 0, errors.New("mode 0 would make the file unreadable, and Lockbox reads 0 as the default 0444: give the mode you mean, such as 0400")
	case m < 0 || m > 0o777:
		return 0, fmt.Errorf("mode %#o holds more than permission bits (0 to 0777)", m)
	}
	return uint32(m), nil
}

// checkComposeText refuses, before the compose library reads the files,
// what Lockbox cannot honour and the library would misreport:
//   - a secret driver: the library requires file: or environment: first,
//     and its message would not say that the driver is the trouble;
//   - a service secret's mode written as a plain number of octal digits
//     without a leading 0, such as "mode: 440": YAML (and so docker stack
//     deploy and docker compose) reads it as decimal 440, which is mode
//     0670, while its writer most likely meant 0440. Lockbox does not let
//     the same text mean two modes silently. The loaded number no longer
//     shows how it was written, hence the text; 0440, 0o440, 288 and
//     "0440" are unambiguous. Files reached by include: or extends: are
//     not read here (their drivers are still refused by planSecret).
func checkComposeText(files []composeFile) error {
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(f.content))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil // the loader reports syntax errors with more context
			}
			if err := checkDocText(&doc); err != nil {
				return fmt.Errorf("%s: %w", f.path, err)
			}
		}
	}
	return nil
}

func checkDocText(doc *yaml.Node) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	// A driver secret has no file: the library's own check would refuse
	// it first, with a message that does not say driver is the trouble.
	if secrets := mappingValue(doc.Content[0], "secrets"); secrets != nil && secrets.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(secrets.Content); i += 2 {
			c := composetypes.SecretConfig{
				Driver:         scalarValue(mappingValue(secrets.Content[i+1], "driver")),
				TemplateDriver: scalarValue(mappingValue(secrets.Content[i+1], "template_driver")),
			}
			if err := refuseComposeDrivers(secrets.Content[i].Value, c); err != nil {
				return err
			}
		}
	}
	services := mappingValue(doc.Content[0], "services")
	if services == nil || services.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(services.Content); i += 2 {
		name := services.Content[i].Value
		refs := mappingValue(services.Content[i+1], "secrets")
		if refs == nil || refs.Kind != yaml.SequenceNode {
			continue
		}
		for _, ref := range refs.Content {
			mode := mappingValue(ref, "mode")
			if mode == nil || mode.Kind != yaml.ScalarNode || mode.Style != 0 || !looksOctal(mode.Value) {
				continue
			}
			dec, _ := strconv.ParseInt(mode.Value, 10, 64)
			decimal := fmt.Sprintf("%#o, not a permission mode", dec)
			other := ""
			if dec <= 0o777 {
				decimal = fmt.Sprintf("mode %#o", dec)
				other = fmt.Sprintf(", or %#o for mode %#o", dec, dec)
			}
			return fmt.Errorf("line %d: service %q: secret %q: mode %s is ambiguous: YAML (and so docker stack deploy) reads it as the decimal number %d, which is %s, while it looks like octal 0%s: write 0%s (or 0o%s) for mode 0%s%s",
				mode.Line, name, scalarValue(mappingValue(ref, "source")), mode.Value, dec, decimal, mode.Value, mode.Value, mode.Value, mode.Value, other)
		}
	}
	return nil
}

// looksOctal: two or more digits 0-7, not starting with 0.
func looksOctal(s string) bool {
	if len(s) < 2 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalarValue(n *yaml.Node) string {
	if n == nil {
		return ""
	}
	return n.Value
}
