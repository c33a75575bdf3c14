package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/pki/jointoken"
)

// ErrRootMismatch is a root CA that is not the one the join token pins:
// the address is another cluster's manager, or an impostor.
var ErrRootMismatch = errors.New("the root CA does not match the join token's digest: wrong cluster or an impostor; refusing to join")

// ErrWrongRole is a token that granted another role than the joiner is.
var ErrWrongRole = errors.New("the join token is for another role")

// FetchPinnedRoot asks the manager at addr for the root CA without
// trusting the connection, and returns it only if it is the certificate
// tok pins. Nothing secret is sent on that connection.
//
// Only the pinned certificate is returned, re-encoded: whatever else the
// answer carries (a second certificate appended after the pinned one)
// never becomes a trust anchor.
func FetchPinnedRoot(ctx context.Context, addr string, tok jointoken.Token) (rootPEM []byte, root *x509.CertPool, err error) {
	// The manager's certificate cannot be checked before the root is
	// known: the answer is checked against the token's digest instead.
	unverified := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // pinned below
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(unverified)))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := caapi.NewNodeCAClient(conn).GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("get the root CA from %s: %w", addr, err)
	}
	der, ok := certDER(resp.GetCertificatePem())
	if !ok {
		return nil, nil, fmt.Errorf("root CA from %s: not a PEM certificate", addr)
	}
	if !tok.PinsCA(der) {
		return nil, nil, fmt.Errorf("%s: %w", addr, ErrRootMismatch)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("root CA from %s: %w", addr, err)
	}
	root = x509.NewCertPool()
	root.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), root, nil
}

// NewKeyAndCSR generates a node key (ECDSA P-256) and a CSR for it. The CA
// names the node: the CSR carries only the public key and, for a manager,
// the addresses other managers and etcd peers dial (dnsNames, ips).
func NewKeyAndCSR(dnsNames []string, ips []net.IP) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode node key: %w", err)
	}
	defer clear(der)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dnsNames, IPAddresses: ips}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), nil
}

// JoinRequest is what a node joins with.
type JoinRequest struct {
	// Addr is the manager to join through (host:port).
	Addr string
	// Token is the join token. Join reads it only during the call; the
	// caller zeroes it afterwards.
	Token []byte
	// Role is what the node is joining as; a token for another role is
	// refused (ErrWrongRole).
	Role types.NodeRole
	// Description is what the node says of itself (hostname, platform).
	Description *types.NodeDescription
	// DNSNames and IPs are a manager's own addresses, put in its CSR;
	// a worker names none.
	DNSNames []string
	IPs      []net.IP
}

// Joined is the result of a join: the node's new credentials.
type Joined struct {
	NodeID string
	// KeyPEM is the node's private key; the caller saves it and zeroes it.
	KeyPEM, CertPEM, RootPEM []byte
	Root                     *x509.CertPool
	Cert                     tls.Certificate
	// Managers are the cluster's manager addresses, as the manager knows them.
	Managers []string
}

// Join trades a join token and a new key's CSR for a certificate at
// req.Addr, the same way for workers and managers: the root CA is fetched
// and pinned by the token's digest first, and the token travels only over
// a connection verified against that root, to a manager certificate.
func Join(ctx context.Context, req JoinRequest) (*Joined, error) {
	// The token is read through a string that shares req.Token's bytes
	// rather than a copy, so that the caller's zeroing of req.Token
	// leaves no copy of it on the heap; nothing keeps the string past
	// this call (the request is marshalled into gRPC's own buffers).
	token := unsafe.String(unsafe.SliceData(req.Token), len(req.Token))
	tok, err := jointoken.Parse(token)
	if err != nil {
		return nil, err
	}
	rootPEM, root, err := FetchPinnedRoot(ctx, req.Addr, tok)
	if err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := NewKeyAndCSR(req.DNSNames, req.IPs)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(req.Addr, grpc.WithTransportCredentials(credentials.NewTLS(ClientTLS(root, nil))))
	if err != nil {
		clear(keyPEM)
		return nil, fmt.Errorf("dial %s: %w", req.Addr, err)
	}
	defer conn.Close()
	resp, err := caapi.NewNodeCAClient(conn).IssueNodeCertificate(ctx, &caapi.IssueNodeCertificateRequest{
		Token: token, CsrPem: csrPEM, Description: req.Description,
	})
	if err != nil {
		clear(keyPEM)
		if st, ok := status.FromError(err); ok {
			switch st.Code() {
			case codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument, codes.ResourceExhausted:
				// The CA refused (a worker token for a manager's CSR, a
				// used or rotated token, a hostname in use, too many
				// requests): its message says what to do.
				return nil, refusal{addr: req.Addr, st: st}
			}
		}
		return nil, fmt.Errorf("join through %s: %w", req.Addr, err)
	}
	if resp.GetRole() != req.Role {
		clear(keyPEM)
		return nil, fmt.Errorf("join through %s: %w: %s", req.Addr, ErrWrongRole, wrongRoleHint(req.Role))
	}
	cert, err := VerifyNodeCert(resp.GetCertificatePem(), keyPEM, root)
	if err != nil {
		clear(keyPEM)
		return nil, fmt.Errorf("join through %s: %w", req.Addr, err)
	}
	return &Joined{
		NodeID: cert.Leaf.Subject.CommonName, KeyPEM: keyPEM, CertPEM: resp.GetCertificatePem(),
		RootPEM: rootPEM, Root: root, Cert: cert, Managers: resp.GetManagers(),
	}, nil
}

func wrongRoleHint(want types.NodeRole) string {
	if want == types.NodeRole_NODE_ROLE_MANAGER {
		return "join managers with the token from 'lockbox join-token manager'"
	}
	return "join nodes with the token from 'lockbox join-token worker'"
}

// VerifyNodeCert checks that certPEM is for keyPEM's key and was issued by
// root for client authentication, and returns the pair for crypto/tls.
func VerifyNodeCert(certPEM, keyPEM []byte, root *x509.CertPool) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node credentials: %w", err)
	}
	// Checked at its own start time: a certificate that has since expired
	// is still this cluster's (renewal decides what to do with it).
	opts := x509.VerifyOptions{Roots: root, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: cert.Leaf.NotBefore.Add(time.Second)}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		return tls.Certificate{}, fmt.Errorf("node credentials: certificate not issued by the cluster's root: %w", err)
	}
	return cert, nil
}

// refusal is the CA's refusal of a join: printed as its message, which is
// written for the operator, and still a gRPC status (status.Code) for
// callers that branch on it.
type refusal struct {
	addr string
	st   *status.Status
}

func (r refusal) Error() string              { return fmt.Sprintf("join through %s: %s", r.addr, r.st.Message()) }
func (r refusal) GRPCStatus() *status.Status { return r.st }
