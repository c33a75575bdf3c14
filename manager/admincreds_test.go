//go:build linux

package manager

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/manager/ca"
	"github.com/lockbox-project/lockbox/pki"
)

// Admin certificates are short-lived and revocable: one past its lifetime
// or revoked is refused by the admin API, and none can be minted over TCP.
func TestAdminCredentialsShortLivedAndRevocable(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, testConfig(t, "127.0.0.1"))
	adm := m.admin()

	issued, err := adm.IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{LifetimeSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.Unix(issued.NotAfterUnix, 0)); left > time.Hour || left < 50*time.Minute {
		t.Fatalf("issued for %s, asked for 1h", left)
	}
	pair, err := tls.X509KeyPair(issued.CertificatePem, issued.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	tcp := adminapi.NewAdminClient(dialTLS(t, m.Addr(), issued.RootCaPem, pair))
	if _, err := tcp.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err != nil {
		t.Fatalf("fresh admin credentials refused: %v", err)
	}
	if _, err := tcp.IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin credentials minted over TCP: %v", err)
	}
	for _, bad := range []int64{1, int64((8 * 24 * time.Hour).Seconds())} {
		if _, err := adm.IssueAdminCredentials(ctx, &adminapi.IssueAdminCredentialsRequest{LifetimeSeconds: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("lifetime %ds: %v", bad, err)
		}
	}
	if _, err := adm.RevokeAdminCredentials(ctx, &adminapi.RevokeAdminCredentialsRequest{Id: m.NodeID()}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("revoking a node through admin-credentials: %v", err)
	}

	// Revoked: refused on the open connection and on a new one.
	if _, err := adm.RevokeAdminCredentials(ctx, &adminapi.RevokeAdminCredentialsRequest{Id: issued.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := tcp.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err == nil {
		t.Fatal("revoked admin credentials accepted on an open connection")
	}
	again := adminapi.NewAdminClient(dialTLS(t, m.Addr(), issued.RootCaPem, pair))
	if _, err := again.ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err == nil {
		t.Fatal("revoked admin credentials accepted on a new connection")
	}

	// Past its lifetime: refused.
	old, err := m.ca().IssueKeyPair(context.Background(), ca.CertRequest{NodeID: "admin-expired", Role: pki.RoleAdmin, NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	oldPair, err := old.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminapi.NewAdminClient(dialTLS(t, m.Addr(), issued.RootCaPem, oldPair)).ListSecrets(ctx, &adminapi.ListSecretsRequest{}); err == nil {
		t.Fatal("expired admin certificate accepted")
	}
}
