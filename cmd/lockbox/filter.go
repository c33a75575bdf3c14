package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// filterFlag is docker's --filter/-f: repeated KEY=VALUE, collected per
// key. Parsing follows docker/cli opts.FilterOpt.Set: no '=' is an error,
// the key is lower-cased and trimmed, the value trimmed.
type filterFlag map[string][]string

func (f filterFlag) String() string {
	var parts []string
	for k, vs := range f {
		for _, v := range vs {
			parts = append(parts, k+"="+v)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (f filterFlag) Set(value string) error {
	if value == "" {
		return nil
	}
	if !strings.Contains(value, "=") {
		return errors.New("bad format of filter (expected name=value)")
	}
	k, v, _ := strings.Cut(value, "=")
	k = strings.ToLower(strings.TrimSpace(k))
	f[k] = append(f[k], strings.TrimSpace(v))
	return nil
}

func (f filterFlag) Type() string { return "filter" }

// secretFilter is a parsed "secret ls" filter with swarm's meaning
// (moby daemon/cluster/filters.go newListSecretsFilters, then swarmkit
// controlapi ListSecrets):
//   - names=N matches a name equal to N, name=P a name starting with P,
//     id=P an ID starting with P; names compare without case (swarm's
//     name index is lower-cased). These three are one set of
//     alternatives: a secret matching any value of any of them is kept
//     (swarmkit ORs them into one store.Or query).
//   - label=K keeps secrets that have label K, label=K=V those whose K is
//     V; every label filter must hold (swarmkit filterMatchLabels).
type secretFilter struct {
	names, namePrefixes, idPrefixes []string
	labels                          map[string]string
}

// secretFilterKeys are the keys docker's daemon accepts for secrets.
var secretFilterKeys = []string{"id", "label", "name", "names"}

func parseSecretFilter(f filterFlag) (secretFilter, error) {
	for k := range f {
		if !slices.Contains(secretFilterKeys, k) {
			// docker: "invalid filter 'foo'" (daemon filters.Validate).
			return secretFilter{}, fmt.Errorf("invalid filter '%s': secret ls filters on %s", k, strings.Join(secretFilterKeys, ", "))
		}
	}
	sf := secretFilter{names: f["names"], namePrefixes: f["name"], idPrefixes: f["id"], labels: map[string]string{}}
	for _, l := range f["label"] {
		// docker's convertKVStringsToMap: "K" and "K=" both mean "has K".
		k, v, _ := strings.Cut(l, "=")
		sf.labels[k] = v
	}
	return sf, nil
}

func (sf secretFilter) match(id, name string, labels map[string]string) bool {
	if len(sf.names)+len(sf.namePrefixes)+len(sf.idPrefixes) > 0 {
		lname := strings.ToLower(name)
		ok := slices.ContainsFunc(sf.names, func(n string) bool { return strings.ToLower(n) == lname }) ||
			slices.ContainsFunc(sf.namePrefixes, func(p string) bool { return strings.HasPrefix(lname, strings.ToLower(p)) }) ||
			slices.ContainsFunc(sf.idPrefixes, func(p string) bool { return strings.HasPrefix(id, p) })
		if !ok {
			return false
		}
	}
	for k, v := range sf.labels {
		have, ok := labels[k]
		if !ok || (v != "" && v != have) {
			return false
		}
	}
	return true
}
