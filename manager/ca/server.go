package ca

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki"
)

// Registrar records a node that just joined (the store's node object).
// An error wrapping ErrJoinRefused refuses the join (its description,
// such as a hostname another node holds) with the error's message.
type Registrar interface {
	RegisterNode(ctx context.Context, id pki.Identity, desc *types.NodeDescription, certPEM []byte) error
}

// ErrJoinRefused: the Registrar refused the joining node; nothing was
// recorded, and the certificate just signed names no node (its sessions
// are refused).
var ErrJoinRefused = errors.New("join refused")

// CertRecorder is what a Registrar may also do: note a renewed
// certificate on the node, so operators see when it expires.
type CertRecorder interface {
	RecordCertificate(ctx context.Context, id pki.Identity, certPEM []byte) error
}

// Server implements the NodeCA service.
type Server struct {
	caapi.UnimplementedNodeCAServer
	ca       *CA
	reg      Registrar
	managers func() []string
	log      *slog.Logger
}

// NewServer returns the NodeCA service of ca. reg may be nil (nothing is
// recorded); managers lists the manager addresses handed to joiners.
func NewServer(ca *CA, reg Registrar, managers func() []string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{ca: ca, reg: reg, managers: managers, log: log}
}

// GetRootCACertificate needs no credentials: the caller pins the answer by
// the digest in its token.
func (s *Server) GetRootCACertificate(context.Context, *caapi.GetRootCACertificateRequest) (*caapi.GetRootCACertificateResponse, error) {
	return &caapi.GetRootCACertificateResponse{CertificatePem: s.ca.CertPEM}, nil
}

// IssueNodeCertificate trades a current join token and a CSR for a
// certificate naming a new node.
func (s *Server) IssueNodeCertificate(ctx context.Context, req *caapi.IssueNodeCertificateRequest) (*caapi.IssueNodeCertificateResponse, error) {
	id, certPEM, err := s.ca.IssueWithToken(ctx, req.GetToken(), req.GetCsrPem())
	if err != nil {
		return nil, caError(err)
	}
	if s.reg != nil {
		if err := s.reg.RegisterNode(ctx, id, req.GetDescription(), certPEM); err != nil {
			if errors.Is(err, ErrJoinRefused) {
				return nil, status.Error(codes.FailedPrecondition, err.Error())
			}
			return nil, status.Errorf(codes.Unavailable, "register node %s: %v", id.NodeID, err)
		}
	}
	s.log.Info("node joined", "node", id.NodeID, "role", id.Role.String(), "hostname", req.GetDescription().GetHostname())
	return s.response(id, certPEM), nil
}

// RenewNodeCertificate signs a new certificate for the caller's identity.
func (s *Server) RenewNodeCertificate(ctx context.Context, req *caapi.RenewNodeCertificateRequest) (*caapi.IssueNodeCertificateResponse, error) {
	who, err := pki.PeerIdentity(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "renew needs the node's current certificate")
	}
	id, certPEM, err := s.ca.Renew(ctx, who, req.GetCsrPem())
	if err != nil {
		return nil, caError(err)
	}
	if rec, ok := s.reg.(CertRecorder); ok {
		if err := rec.RecordCertificate(ctx, id, certPEM); err != nil {
			// The node has its certificate; only the display is stale.
			s.log.Warn("renewed certificate not recorded on the node", "node", id.NodeID, "err", err)
		}
	}
	s.log.Info("node certificate renewed", "node", id.NodeID)
	return s.response(id, certPEM), nil
}

func (s *Server) response(id pki.Identity, certPEM []byte) *caapi.IssueNodeCertificateResponse {
	var managers []string
	if s.managers != nil {
		managers = s.managers()
	}
	return &caapi.IssueNodeCertificateResponse{
		NodeId:         id.NodeID,
		Role:           id.Role.NodeRole(),
		CertificatePem: certPEM,
		RootCaPem:      s.ca.CertPEM,
		Managers:       managers,
	}
}

func caError(err error) error {
	switch {
	case errors.Is(err, ErrInvalidToken), errors.Is(err, ErrTokenOtherCA):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrRevoked):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrWrongRoleToken):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrBadCSR):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
