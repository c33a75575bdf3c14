//go:build linux

package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	caapi "github.com/lockbox-project/lockbox/api/ca"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/admin"
)

// A request larger than the biggest secret plus framing is refused before
// it is decoded, on both listeners; the biggest secret still fits.
func TestOversizedMessageRefused(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, testConfig(t, "127.0.0.1"))
	tcp := adminapi.NewAdminClient(dialTLS(t, m.Addr(), m.rootPEM(), m.adminCert(), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(4<<20))))
	sock := m.admin()
	for name, cl := range map[string]adminapi.AdminClient{"socket": sock, "tcp": tcp} {
		big := bytes.Repeat([]byte{'x'}, maxRecvMsgSize+1)
		_, err := cl.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "big-" + name}, Data: big})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: %d-byte request: %v", name, len(big), err)
		}
		max := bytes.Repeat([]byte{'y'}, admin.MaxSecretSize-1)
		if _, err := cl.CreateSecret(ctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "max-" + name}, Data: max}); err != nil {
			t.Errorf("%s: the largest secret refused: %v", name, err)
		}
	}
}

// A burst of unauthenticated certificate requests from one address is cut
// off after the limit; another address still gets through.
func TestUnauthenticatedRateLimitPerAddress(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "127.0.0.1")
	cfg.UnauthRate, cfg.UnauthBurst = rate.Limit(0.001), 3
	m := startManager(t, cfg)
	from := func(ip string) caapi.NodeCAClient {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		conn := dialTLS(t, m.Addr(), m.rootPEM(), tls.Certificate{}, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
		return caapi.NewNodeCAClient(conn)
	}
	one := from("127.0.0.3")
	for i := range 3 {
		if _, err := one.GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{}); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	if _, err := one.GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("request past the burst: %v", err)
	}
	if _, err := one.IssueNodeCertificate(ctx, &caapi.IssueNodeCertificateRequest{Token: "x"}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("join past the burst: %v", err)
	}
	// A new connection from the same address shares its budget.
	if _, err := from("127.0.0.3").GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("new connection, same address: %v", err)
	}
	if _, err := from("127.0.0.4").GetRootCACertificate(ctx, &caapi.GetRootCACertificateRequest{}); err != nil {
		t.Fatalf("another address: %v", err)
	}
}
