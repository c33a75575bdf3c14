package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

// stackDeployer applies a stackPlan through the admin API, in docker's
// order and with docker's messages ("Creating secret X", "Creating
// service X", "Updating service X (id: ID)"): external secrets checked,
// then the stack's secrets, then its services.
type stackDeployer struct {
	cl      adminapi.AdminClient
	explain func(error) error // the manager's message, without gRPC framing
	out     io.Writer
	prune   bool
}

func (d *stackDeployer) deploy(ctx context.Context, plan *stackPlan) error {
	// Everything that can be refused without writing comes first.
	for _, s := range plan.secrets {
		if !s.external {
			continue
		}
		if _, err := d.cl.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: s.name}); err != nil {
			if codeOf(err) == codes.NotFound {
				return fmt.Errorf("secret %q is declared external, but secret '%s' was not found: create it first with 'lockbox secret create %s FILE'", s.key, s.name, s.name)
			}
			return d.explain(err)
		}
	}
	var actions []secretAction
	for _, s := range plan.secrets {
		if !s.external {
			a, err := d.checkSecret(ctx, plan.stack, s)
			if err != nil {
				return err
			}
			actions = append(actions, a)
		}
	}
	for _, a := range actions {
		if err := d.applySecret(ctx, a); err != nil {
			return err
		}
	}
	existing, err := stackServices(ctx, d.cl, plan.stack)
	if err != nil {
		return d.explain(err)
	}
	byName := map[string]*types.Service{}
	for _, s := range existing {
		byName[s.GetSpec().GetName()] = s
	}
	if d.prune {
		for _, s := range existing {
			if !slices.ContainsFunc(plan.services, func(w *types.ServiceSpec) bool { return w.Name == s.GetSpec().GetName() }) {
				fmt.Fprintln(d.out, "Removing service", s.GetSpec().GetName())
				if _, err := d.cl.RemoveService(ctx, &adminapi.RemoveServiceRequest{NameOrId: s.Id}); err != nil {
					return fmt.Errorf("failed to remove service %s: %w", s.GetSpec().GetName(), d.explain(err))
				}
			}
		}
	}
	for _, want := range plan.services {
		if cur := byName[want.Name]; cur != nil {
			if err := d.updateService(ctx, cur, want); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(d.out, "Creating service", want.Name)
		if _, err := d.cl.CreateService(ctx, &adminapi.CreateServiceRequest{Spec: want}); err != nil {
			return fmt.Errorf("failed to create service %s: %w", want.Name, d.explain(err))
		}
	}
	return nil
}

// secretAction is what a deploy does to one of the stack's secrets.
type secretAction struct {
	s   *stackSecret
	cur *types.Secret // nil: create it
}

// checkSecret decides what to do with a stack secret, writing nothing
// but sameData's short-lived copy. Docker sends the data again on every
// deploy and swarm refuses a change ("only updates to Labels are
// allowed"): a secret's data is immutable, and changing it under running
// containers would be a silent rotation. Lockbox does the same: same
// data, the labels are brought in line (as docker's update does); other
// data, an error naming the secret and the way out. Every secret is
// checked before any is written, so that a refused deploy changes nothing
// (docker's stops half-way).
func (d *stackDeployer) checkSecret(ctx context.Context, stack string, s *stackSecret) (secretAction, error) {
	resp, err := d.cl.GetSecret(ctx, &adminapi.GetSecretRequest{NameOrId: s.name})
	if codeOf(err) == codes.NotFound {
		return secretAction{s: s}, nil
	}
	if err != nil {
		return secretAction{}, d.explain(err)
	}
	cur := resp.Secret
	if other := cur.GetSpec().GetLabels()[stackLabel]; other != "" && other != stack {
		return secretAction{}, fmt.Errorf("failed to update secret %s: it belongs to stack %s; give this stack's secret another name (name: in the compose file)", s.name, other)
	}
	same, err := d.sameData(ctx, stack, cur, s.data)
	if err != nil {
		return secretAction{}, fmt.Errorf("failed to update secret %s: %w", s.name, err)
	}
	if !same {
		return secretAction{}, fmt.Errorf("failed to update secret %s: only updates to Labels are allowed: its data differs from %s, and a secret's data is immutable (as in Docker); to rotate, give the new data a new name (name: %s_v2 in the compose file), deploy, then remove the old secret", s.name, s.origin, s.name)
	}
	return secretAction{s: s, cur: cur}, nil
}

// applySecret creates the secret, or gives the existing one the file's
// labels.
func (d *stackDeployer) applySecret(ctx context.Context, a secretAction) error {
	s := a.s
	if a.cur == nil {
		fmt.Fprintln(d.out, "Creating secret", s.name)
		_, err := d.cl.CreateSecret(ctx, &adminapi.CreateSecretRequest{
			Spec: &types.SecretSpec{Name: s.name, Labels: s.labels}, Data: s.data,
		})
		if err != nil {
			return fmt.Errorf("failed to create secret %s: %w", s.name, d.explain(err))
		}
		return nil
	}
	if maps.Equal(a.cur.GetSpec().GetLabels(), s.labels) {
		return nil
	}
	_, err := d.cl.UpdateSecret(ctx, &adminapi.UpdateSecretRequest{
		NameOrId: a.cur.Id, Version: a.cur.GetMeta().GetVersion(),
		Spec: &types.SecretSpec{Name: s.name, Labels: s.labels},
	})
	if err != nil {
		return fmt.Errorf("failed to update secret %s: %w", s.name, d.explain(err))
	}
	return nil
}

// probeLabel marks the short-lived secret sameData creates; it also
// carries the stack's label, so that "stack rm" removes one that a
// killed deploy left behind.
const probeLabel = "com.lockbox.stack.probe"

// sameData reports whether cur holds data. The admin API never returns a
// secret's data, and its digest is keyed by a cluster key the CLI does
// not have; so when the sizes match, the data is stored once more under
// a random name, the two digests compared, and the copy removed at once.
// That copy is sealed like any secret and referenced by no service, so
// no node ever receives it.
func (d *stackDeployer) sameData(ctx context.Context, stack string, cur *types.Secret, data []byte) (bool, error) {
	if cur.GetSize() != int64(len(data)) {
		return false, nil
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return false, err
	}
	name := "lockbox-stack-probe-" + hex.EncodeToString(rnd[:])
	resp, err := d.cl.CreateSecret(ctx, &adminapi.CreateSecretRequest{
		Spec: &types.SecretSpec{Name: name, Labels: map[string]string{stackLabel: stack, probeLabel: cur.GetSpec().GetName()}},
		Data: data,
	})
	if err != nil {
		return false, fmt.Errorf("comparing its data: %w", d.explain(err))
	}
	// Removed even when ctx has run out: it must not outlive the deploy.
	rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := d.cl.RemoveSecret(rmCtx, &adminapi.RemoveSecretRequest{NameOrId: resp.Secret.Id}); err != nil {
		return false, fmt.Errorf("removing the comparison copy %s: %w ('lockbox stack rm %s' removes it too)", name, d.explain(err), stack)
	}
	have, got := cur.GetDigest(), resp.Secret.GetDigest()
	if have == "" || got == "" {
		return false, errors.New("the manager gives no digests to compare the data with")
	}
	return have == got, nil
}

// updateService gives an existing stack service the file's references,
// constraints and labels. Its claim rules, live update and signals are
// kept: compose files have none, dropping rules an operator added would
// widen who may claim the service, and dropping the others would silently
// stop a rotation reaching running containers. Nothing is written when
// nothing changed.
func (d *stackDeployer) updateService(ctx context.Context, cur *types.Service, want *types.ServiceSpec) error {
	fmt.Fprintf(d.out, "Updating service %s (id: %s)\n", want.Name, cur.Id)
	for attempt := 1; ; attempt++ {
		next := proto.Clone(cur.GetSpec()).(*types.ServiceSpec)
		next.Secrets, next.Placement, next.Labels = keepSignals(cur.GetSpec().GetSecrets(), want.Secrets), want.Placement, want.Labels
		if sameStackSpec(cur.GetSpec(), next) {
			return nil
		}
		_, err := d.cl.UpdateService(ctx, &adminapi.UpdateServiceRequest{NameOrId: cur.Id, Version: cur.GetMeta().GetVersion(), Spec: next})
		if codeOf(err) == codes.Aborted && attempt < stackUpdateAttempts {
			resp, gerr := d.cl.GetService(ctx, &adminapi.GetServiceRequest{NameOrId: cur.Id})
			if gerr != nil {
				return fmt.Errorf("failed to update service %s: %w", want.Name, d.explain(gerr))
			}
			cur = resp.Service
			continue // someone else updated it first
		}
		if err != nil {
			return fmt.Errorf("failed to update service %s: %w", want.Name, d.explain(err))
		}
		return nil
	}
}

// keepSignals returns the file's references with the live-update signals
// an operator gave the service's current ones (compose files have none):
// a reference keeps the signal of the current one for the same file (its
// target, or its secret when neither names a target), so a rotation by
// redeploy still signals the process that reads the file.
func keepSignals(cur, want []*types.SecretReference) []*types.SecretReference {
	file := func(r *types.SecretReference) string {
		if t := r.GetTarget().GetName(); t != "" {
			return "target:" + t
		}
		return "secret:" + r.GetSecretName()
	}
	signals := map[string]string{}
	for _, r := range cur {
		if r.GetSignal() != "" {
			signals[file(r)] = r.GetSignal()
		}
	}
	out := make([]*types.SecretReference, len(want))
	for i, r := range want {
		out[i] = r
		if sig := signals[file(r)]; sig != "" && r.GetSignal() == "" {
			out[i] = proto.Clone(r).(*types.SecretReference)
			out[i].Signal = sig
		}
	}
	return out
}

// stackUpdateAttempts bounds the read-modify-write retries of a service
// update when another writer keeps winning.
const stackUpdateAttempts = 10

// sameStackSpec compares what a stack sets: references (by secret name:
// the manager fills in IDs), constraints and labels.
func sameStackSpec(a, b *types.ServiceSpec) bool {
	if !maps.Equal(a.GetLabels(), b.GetLabels()) ||
		!slices.Equal(a.GetPlacement().GetConstraints(), b.GetPlacement().GetConstraints()) ||
		len(a.GetSecrets()) != len(b.GetSecrets()) {
		return false
	}
	for i, ra := range a.GetSecrets() {
		rb := b.GetSecrets()[i]
		if ra.GetSecretName() != rb.GetSecretName() || !proto.Equal(ra.GetTarget(), rb.GetTarget()) {
			return false
		}
	}
	return true
}

// stackServices lists the services labelled as the stack's.
func stackServices(ctx context.Context, cl adminapi.AdminClient, stack string) ([]*types.Service, error) {
	resp, err := cl.ListServices(ctx, &adminapi.ListServicesRequest{})
	if err != nil {
		return nil, err
	}
	var out []*types.Service
	for _, s := range resp.Services {
		if s.GetSpec().GetLabels()[stackLabel] == stack {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *types.Service) int { return strings.Compare(a.GetSpec().GetName(), b.GetSpec().GetName()) })
	return out, nil
}

// stackSecrets lists the secrets labelled as the stack's: those its
// deploys created (external ones carry no label and are never listed).
func stackSecrets(ctx context.Context, cl adminapi.AdminClient, stack string) ([]*types.Secret, error) {
	resp, err := cl.ListSecrets(ctx, &adminapi.ListSecretsRequest{})
	if err != nil {
		return nil, err
	}
	var out []*types.Secret
	for _, s := range resp.Secrets {
		if s.GetSpec().GetLabels()[stackLabel] == stack {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *types.Secret) int { return strings.Compare(a.GetSpec().GetName(), b.GetSpec().GetName()) })
	return out, nil
}
