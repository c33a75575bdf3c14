package main

import (
	"context"
	"errors"
	"os"
	"sync"

	"github.com/lockbox-project/lockbox/agent/localapi"
	"github.com/lockbox-project/lockbox/api/agent"
)

// redialer is an nri.Agent over the agent socket that reconnects after a
// transport failure (the agent restarted): a localapi.Client stays unusable
// once a request on it failed mid-way.
type redialer struct {
	socket string
	mu     sync.Mutex
	c      *localapi.Client
}

func (r *redialer) client() (*localapi.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		return r.c, nil
	}
	c, err := localapi.Dial(r.socket)
	if err != nil {
		return nil, err
	}
	r.c = c
	return c, nil
}

// done drops the connection after an error that is not the agent's answer.
func (r *redialer) done(c *localapi.Client, err error) {
	var ae *localapi.Error
	if err == nil || errors.As(err, &ae) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == c {
		r.c.Close()
		r.c = nil
	}
}

func (r *redialer) Prepare(ctx context.Context, req *agent.PrepareRequest) (*agent.PrepareResponse, []*os.File, error) {
	c, err := r.client()
	if err != nil {
		return nil, nil, err
	}
	resp, files, err := c.Prepare(ctx, req)
	r.done(c, err)
	return resp, files, err
}

func (r *redialer) Targets(ctx context.Context, req *agent.TargetsRequest) (*agent.TargetsResponse, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	resp, err := c.Targets(ctx, req)
	r.done(c, err)
	return resp, err
}

func (r *redialer) Release(ctx context.Context, id string) error {
	c, err := r.client()
	if err != nil {
		return err
	}
	err = c.Release(ctx, id)
	r.done(c, err)
	return err
}

func (r *redialer) List(ctx context.Context) (*agent.ListResponse, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	resp, err := c.List(ctx)
	r.done(c, err)
	return resp, err
}

func (r *redialer) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
}
