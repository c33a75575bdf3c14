package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/types"
)

func TestIdentityFromCert(t *testing.T) {
	ca := newTestCA(t, "cluster1")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := func(subject pkix.Name) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: subject,
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	name := func(cn string, ou, o []string) pkix.Name {
		return pkix.Name{CommonName: cn, OrganizationalUnit: ou, Organization: o}
	}
	tests := []struct {
		name     string
		subject  pkix.Name
		want     Role
		nodeRole types.NodeRole
		ok       bool
	}{
		{"worker", name("n1", []string{WorkerOU}, []string{"cluster1"}), RoleWorker, types.NodeRole_NODE_ROLE_WORKER, true},
		{"manager", name("n1", []string{ManagerOU}, []string{"cluster1"}), RoleManager, types.NodeRole_NODE_ROLE_MANAGER, true},
		{"admin", name("admin-x", []string{AdminOU}, []string{"cluster1"}), RoleAdmin, types.NodeRole_NODE_ROLE_WORKER, true},
		{"unknown role", name("n1", []string{"lockbox-root"}, []string{"cluster1"}), 0, 0, false},
		{"two roles", name("n1", []string{WorkerOU, ManagerOU}, []string{"cluster1"}), 0, 0, false},
		{"no cluster", name("n1", []string{WorkerOU}, nil), 0, 0, false},
		{"no node ID", name("", []string{WorkerOU}, []string{"cluster1"}), 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := IdentityFromCert(cert(tt.subject))
			if tt.ok != (err == nil) {
				t.Fatalf("got %+v, %v; want ok=%v", id, err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if id.Role != tt.want || id.Role.NodeRole() != tt.nodeRole || id.NodeID != tt.subject.CommonName || id.ClusterID != "cluster1" || id.Serial != "2a" {
				t.Errorf("identity %+v", id)
			}
		})
	}
}
