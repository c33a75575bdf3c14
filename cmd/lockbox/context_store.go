package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/lockbox-project/lockbox/pki"
)

// The context store, in docker's shape: a directory ($LOCKBOX_CONFIG, like
// $DOCKER_CONFIG, else ~/.lockbox) holding config.json, whose
// "currentContext" names the context in use, and contexts/NAME/meta.json
// for each context.
//
// A context references its TLS files by absolute path; it never copies
// them. Docker copies TLS material into its store, which keeps a context
// working when the source directory goes away; Lockbox's admin
// certificates are short-lived (12h by default) and re-issued into the same
// directory by 'lockbox admin-credentials create --dir DIR', so a copy
// would go stale within a day and would be a second admin key on disk.
// Everything the store writes is 0600 in 0700 directories.

const (
	configEnv       = "LOCKBOX_CONFIG"
	contextEnv      = "LOCKBOX_CONTEXT"
	hostEnv         = "LOCKBOX_HOST"
	configFile      = "config.json"
	contextsDir     = "contexts"
	contextMetaFile = "meta.json"
	// defaultContext is the context that always exists: -H, LOCKBOX_HOST
	// or the local admin socket, with the TLS flags of the command line.
	defaultContext = "default"
)

// contextNameRE is docker's rule for context names; it also keeps a name a
// single safe path element (no "/", no leading ".").
var contextNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$`)

// contextTLS names a context's TLS files by absolute path. The key's
// path is shown by inspect; its content never is.
type contextTLS struct {
	CA   string
	Cert string
	Key  string
}

// contextMeta is meta.json.
type contextMeta struct {
	Name        string
	Description string `json:",omitempty"`
	Host        string
	TLS         *contextTLS `json:",omitempty"`
}

// contextStore is the store in dir.
type contextStore struct{ dir string }

// openContextStore finds the store: $LOCKBOX_CONFIG, else ~/.lockbox.
func openContextStore(getenv func(string) string) (*contextStore, error) {
	if d := getenv(configEnv); d != "" {
		return &contextStore{dir: d}, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, fmt.Errorf("no home directory for ~/.lockbox (set %s): %w", configEnv, err)
	}
	return &contextStore{dir: filepath.Join(home, ".lockbox")}, nil
}

func (s *contextStore) configPath() string { return filepath.Join(s.dir, configFile) }

func (s *contextStore) metaPath(name string) string {
	return filepath.Join(s.dir, contextsDir, name, contextMetaFile)
}

// readConfig reads config.json whole, so that keys other than
// currentContext survive a rewrite. A missing file is an empty config.
func (s *contextStore) readConfig() (map[string]json.RawMessage, error) {
	b, err := os.ReadFile(s.configPath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading config file: %w", err)
	}
	cfg := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("loading config file %s: %w", s.configPath(), err)
	}
	return cfg, nil
}

// current is the config file's current context ("" when unset).
func (s *contextStore) current() (string, error) {
	cfg, err := s.readConfig()
	if err != nil {
		return "", err
	}
	var name string
	if raw, ok := cfg["currentContext"]; ok {
		if err := json.Unmarshal(raw, &name); err != nil {
			return "", fmt.Errorf("loading config file %s: currentContext: %w", s.configPath(), err)
		}
	}
	return name, nil
}

// setCurrent writes name as the current context; the default context is
// written as no key at all, as docker does.
func (s *contextStore) setCurrent(name string) error {
	cfg, err := s.readConfig()
	if err != nil {
		return err
	}
	delete(cfg, "currentContext")
	if name != defaultContext {
		raw, _ := json.Marshal(name)
		cfg["currentContext"] = raw
	}
	b, err := json.MarshalIndent(cfg, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	return writePrivate(s.configPath(), append(b, '\n'))
}

// get reads a context; the default context is not stored.
func (s *contextStore) get(name string) (*contextMeta, error) {
	b, err := os.ReadFile(s.metaPath(name))
	if errors.Is(err, fs.ErrNotExist) || !contextNameRE.MatchString(name) {
		return nil, fmt.Errorf("context %q does not exist", name)
	}
	if err != nil {
		return nil, fmt.Errorf("context %q: %w", name, err)
	}
	var m contextMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("context %q: %s: %w", name, s.metaPath(name), err)
	}
	m.Name = name
	return &m, nil
}

// list returns the stored contexts' names, sorted.
func (s *contextStore) list() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, contextsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && contextNameRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// create stores m; an existing context of that name is an error.
func (s *contextStore) create(m *contextMeta) error {
	if err := checkContextName(m.Name); err != nil {
		return err
	}
	parent := filepath.Join(s.dir, contextsDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	dir := filepath.Join(parent, m.Name)
	if err := os.Mkdir(dir, 0o700); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("context %q already exists", m.Name)
	} else if err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "\t")
	if err == nil {
		err = writePrivate(s.metaPath(m.Name), append(b, '\n'))
	}
	if err != nil {
		os.RemoveAll(dir)
	}
	return err
}

// update rewrites an existing context's meta.json.
func (s *contextStore) update(m *contextMeta) error {
	if _, err := s.get(m.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	return writePrivate(s.metaPath(m.Name), append(b, '\n'))
}

// remove deletes a stored context.
func (s *contextStore) remove(name string) error {
	if _, err := s.get(name); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(s.dir, contextsDir, name))
}

func checkContextName(name string) error {
	if name == defaultContext {
		return fmt.Errorf("%q is a reserved context name", name)
	}
	if !contextNameRE.MatchString(name) {
		return fmt.Errorf("context name %q is invalid, names are validated against regexp %q", name, contextNameRE.String())
	}
	return nil
}

// checkContextTLS says whether a context's TLS files are there and fit
// together (the CA parses, the certificate matches the key), naming the
// file at fault and how to get a new set.
func checkContextTLS(t *contextTLS) error {
	ca, err := os.ReadFile(t.CA)
	if err != nil {
		return fmt.Errorf("TLS CA certificate: %w", err)
	}
	if _, err := pki.RootPool(ca); err != nil {
		return fmt.Errorf("TLS CA certificate %s: %w", t.CA, err)
	}
	if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
		return fmt.Errorf("TLS certificate and key (%s, %s): %w", t.Cert, t.Key, err)
	}
	return nil
}

// writePrivate writes a 0600 file through a rename, so a reader never sees
// half of it.
func writePrivate(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
