//go:build linux || windows

package localapi

import (
	"context"
	"errors"
	"os"

	"github.com/lockbox-project/lockbox/agent/errdefs"
	"github.com/lockbox-project/lockbox/api/agent"
	"github.com/lockbox-project/lockbox/api/validation"
)

// This file is the transport-neutral half of the server: a decoded Request
// in, a Response (and the files to send with it) out. The Linux socket
// (server_linux.go) and the Windows pipe (server_windows.go) differ only in
// how they carry messages and check callers.

// opName names a request's operation for metrics.
func opName(req *agent.Request) string {
	switch req.GetOp().(type) {
	case *agent.Request_Prepare:
		return "prepare"
	case *agent.Request_Release:
		return "release"
	case *agent.Request_List:
		return "list"
	case *agent.Request_Targets:
		return "targets"
	case *agent.Request_Bind:
		return "bind"
	}
	return "none"
}

// noReply reports whether req asks for no answer (a release with
// no_reply): the server sends nothing back, whatever the outcome.
func noReply(req *agent.Request) bool {
	r, ok := req.GetOp().(*agent.Request_Release)
	return ok && r.Release.GetNoReply()
}

// resultName is the result label of an answer: OK or its error code.
func resultName(resp *agent.Response) string {
	if e := resp.GetError(); e != nil {
		return e.GetCode().String()
	}
	return "OK"
}

// dispatch validates req and hands it to h. The platform's checkPrepare
// refuses Prepares its transport cannot serve.
func dispatch(ctx context.Context, h Handler, req *agent.Request) (*agent.Response, []*os.File) {
	fail := func(err error) (*agent.Response, []*os.File) {
		return &agent.Response{Error: toProto(err)}, nil
	}
	switch op := req.GetOp().(type) {
	case *agent.Request_Prepare:
		if err := checkClaim("prepare", op.Prepare.GetContainer()); err != nil {
			return fail(err)
		}
		if err := checkPrepare(op.Prepare); err != nil {
			return fail(err)
		}
		resp, files, err := h.Prepare(ctx, op.Prepare)
		if err != nil {
			closeAll(files)
			return fail(err)
		}
		if resp == nil {
			resp = &agent.PrepareResponse{}
		}
		return &agent.Response{Result: &agent.Response_Prepare{Prepare: resp}}, files
	case *agent.Request_Release:
		if op.Release.GetContainerId() == "" {
			return fail(Errorf(agent.Error_INVALID, "release: container id is empty"))
		}
		var err error
		if rr, ok := h.(RequestReleaser); ok {
			err = rr.ReleaseRequest(ctx, op.Release)
		} else {
			err = h.Release(ctx, op.Release.GetContainerId())
		}
		if err != nil {
			return fail(err)
		}
		return &agent.Response{Result: &agent.Response_Release{Release: &agent.ReleaseResponse{}}}, nil
	case *agent.Request_Targets:
		// The same checks as a Prepare's: the claim is the same.
		if err := checkClaim("targets", op.Targets.GetContainer()); err != nil {
			return fail(err)
		}
		th, ok := h.(Targeter)
		if !ok {
			return fail(Errorf(agent.Error_INVALID, "targets: this agent cannot tell a claim's targets before the container exists"))
		}
		resp, err := th.Targets(ctx, op.Targets)
		if err != nil {
			return fail(err)
		}
		if resp == nil {
			resp = &agent.TargetsResponse{}
		}
		return &agent.Response{Result: &agent.Response_Targets{Targets: resp}}, nil
	case *agent.Request_Bind:
		if op.Bind.GetContainerId() == "" {
			return fail(Errorf(agent.Error_INVALID, "bind: container id is empty"))
		}
		if op.Bind.GetPid() <= 0 {
			return fail(Errorf(agent.Error_INVALID, "bind: container %q: pid %d is not a process", op.Bind.GetContainerId(), op.Bind.GetPid()))
		}
		bh, ok := h.(Binder)
		if !ok {
			return fail(Errorf(agent.Error_INVALID, "bind: this agent cannot hold a container's secrets before the container exists"))
		}
		if err := bh.Bind(ctx, op.Bind); err != nil {
			return fail(err)
		}
		return &agent.Response{Result: &agent.Response_Bind{Bind: &agent.BindResponse{}}}, nil
	case *agent.Request_List:
		resp, err := h.List(ctx)
		if err != nil {
			return fail(err)
		}
		if resp == nil {
			resp = &agent.ListResponse{}
		}
		return &agent.Response{Result: &agent.Response_List{List: resp}}, nil
	default:
		return fail(Errorf(agent.Error_INVALID, "request names no operation"))
	}
}

// checkClaim refuses a claim that names no container or no valid service,
// for prepare and targets alike.
func checkClaim(op string, c *agent.Container) error {
	if c.GetId() == "" {
		return Errorf(agent.Error_INVALID, "%s: container id is empty", op)
	}
	if svc := c.GetService(); !ValidServiceName(svc) {
		// Quoted and cut short: the name is the caller's, unchecked.
		return Errorf(agent.Error_INVALID, "%s: service name %.70q is not a service name (%s)", op, svc, validation.NameRule)
	}
	return nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// toProto turns any error into the wire form; errors that are not *Error are
// reported as UNKNOWN with their text.
func toProto(err error) *agent.Error {
	e := WireError(err)
	return &agent.Error{Code: e.Code, Message: e.Message}
}

// WireError maps an error a Handler returned onto the local API's wire
// error, the one place that does: an *Error as it is, a domain error
// (agent/errdefs) by its kind, anything else as UNKNOWN.
func WireError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := agent.Error_UNKNOWN
	switch errdefs.KindOf(err) {
	case errdefs.Invalid:
		code = agent.Error_INVALID
	case errdefs.NotGranted:
		code = agent.Error_NOT_GRANTED
	case errdefs.NotFound:
		code = agent.Error_NOT_FOUND
	case errdefs.Refused:
		code = agent.Error_REFUSED
	}
	return &Error{Code: code, Message: err.Error()}
}

func fromProto(pe *agent.Error) *Error {
	return &Error{Code: pe.GetCode(), Message: pe.GetMessage()}
}
