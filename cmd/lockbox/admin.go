package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/pki"
)

// defaultHost is the manager's root-only admin socket, like dockerd's.
const defaultHost = "unix:///run/lockbox/manager.sock"

// connFlags are the global flags that say how to reach a manager.
type connFlags struct {
	host    string
	caCert  string
	cert    string
	key     string
	timeout time.Duration
}

// addAdminCommands adds the operator's verbs (secret, service, node,
// join-token, unlock, unlock-key) and the global connection flags.
func addAdminCommands(root *cobra.Command) {
	c := &connFlags{}
	pf := root.PersistentFlags()
	host := os.Getenv("LOCKBOX_HOST")
	if host == "" {
		host = defaultHost
	}
	pf.StringVarP(&c.host, "host", "H", host, "manager to talk to: unix://PATH or tcp://ADDR (env LOCKBOX_HOST)")
	pf.StringVar(&c.caCert, "tlscacert", "", "CA certificate that signed the manager's certificate (tcp://)")
	pf.StringVar(&c.cert, "tlscert", "", "admin client certificate (tcp://)")
	pf.StringVar(&c.key, "tlskey", "", "admin client key (tcp://)")
	pf.DurationVar(&c.timeout, "timeout", 60*time.Second, "give up on a manager call after this long")
	root.AddCommand(
		newSecretCommand(c),
		newServiceCommand(c),
		newNodeCommand(c),
		newJoinTokenCommand(c),
		newUnlockCommand(c),
		newUnlockKeyCommand(c),
		newDataKeyCommand(c),
		newAdminCredentialsCommand(c),
		newKEKCommand(c),
		newAuditCommand(c),
		newContextCommand(),
	)
	addContextFlag(root, c)
}

// dial connects to the manager c names. The connection is lazy: errors
// reaching the manager show up on the first call.
func (c *connFlags) dial() (*grpc.ClientConn, error) {
	scheme, addr, err := parseHost(c.host)
	if err != nil {
		return nil, err
	}
	if scheme == "unix" {
		if c.caCert != "" || c.cert != "" || c.key != "" {
			return nil, errors.New("--tlscacert, --tlscert and --tlskey are for tcp:// hosts; the unix socket is authorised by its owner")
		}
		// The socket is root-only and the manager checks SO_PEERCRED: no
		// TLS on a local socket, as with dockerd.
		return grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	creds, err := c.tlsCredentials()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// parseHost checks a manager address, from -H, LOCKBOX_HOST or a context,
// and splits it into its scheme (unix or tcp) and address.
func parseHost(host string) (scheme, addr string, err error) {
	scheme, addr, ok := strings.Cut(host, "://")
	if !ok {
		return "", "", fmt.Errorf("-H %q: want unix://PATH or tcp://ADDR", host)
	}
	switch scheme {
	case "unix":
		if addr == "" {
			return "", "", fmt.Errorf("-H %q: empty socket path", host)
		}
	case "tcp":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", "", fmt.Errorf("-H %s: %w", host, err)
		}
	default:
		return "", "", fmt.Errorf("-H %q: unknown scheme %q; want unix:// or tcp://", host, scheme)
	}
	return scheme, addr, nil
}

func (c *connFlags) tlsCredentials() (credentials.TransportCredentials, error) {
	if c.caCert == "" || c.cert == "" || c.key == "" {
		return nil, fmt.Errorf("-H %s: a tcp:// manager needs --tlscacert, --tlscert and --tlskey: short-lived ones from 'lockbox admin-credentials create --dir DIR' on the manager (as root), or, without autolock, those written at init under the manager's data dir", c.host)
	}
	pem, err := os.ReadFile(c.caCert)
	if err != nil {
		return nil, fmt.Errorf("--tlscacert: %w", err)
	}
	pool, err := pki.RootPool(pem)
	if err != nil {
		return nil, fmt.Errorf("--tlscacert %s: %w", c.caCert, err)
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--tlscert/--tlskey: %w (a manager with autolock writes no admin key at init: issue short-lived credentials with 'lockbox admin-credentials create --dir DIR' on the manager, as root)", err)
		}
		return nil, fmt.Errorf("--tlscert/--tlskey: %w", err)
	}
	// The admin certificate dials managers like any node does.
	return credentials.NewTLS(pki.ClientTLS(pool, func() *tls.Certificate { return &pair })), nil
}

// run calls fn with an Admin client and a context bounded by --timeout,
// and turns gRPC errors into the manager's message.
func (c *connFlags) run(cmd *cobra.Command, fn func(ctx context.Context, cl adminapi.AdminClient) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	return c.explain(fn(ctx, adminapi.NewAdminClient(conn)))
}

// explain strips gRPC's "rpc error: code = ... desc =" framing: the
// manager's messages are written for the operator.
func (c *connFlags) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the manager at %s: %s (is it running? choose another with -H, LOCKBOX_HOST or --context)", c.host, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("the manager at %s did not answer within %s", c.host, c.timeout)
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("the manager at %s refused these credentials: %s", c.host, st.Message())
	}
	return errors.New(st.Message())
}

// codeOf is the gRPC code of an error from the manager (OK for nil).
func codeOf(err error) codes.Code { return status.Code(err) }

// errs joins the errors of a verb applied to several objects, so each is
// reported and the exit status is non-zero.
type errs []error

func (e errs) err() error { return errors.Join(e...) }
