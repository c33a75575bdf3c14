package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	"github.com/lockbox-project/lockbox/api/types"
)

// TestRemovedManagersOpenPeerConnectionIsClosed: etcd checks the peer CRL
// only when it accepts a connection, so a manager removed while it held
// a busy keep-alive connection to a member's peer port could go on
// posting raft messages over it. Every member now drops the connections
// accepted before a revocation: the removed manager's connection, kept
// busy the whole time, ends within moments of the CRL reaching the member,
// it cannot open another, and the cluster keeps serving.
func TestRemovedManagersOpenPeerConnectionIsClosed(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	cfg2, cfg3 := testConfig(t, "127.0.0.2"), testConfig(t, "127.0.0.3")
	cfg2.JoinAddr, cfg2.JoinToken = m1.Addr(), []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	startManager(t, cfg2) // the third member: quorum without manager 3
	cfg3.JoinAddr, cfg3.JoinToken = m1.Addr(), []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m3 := startManager(t, cfg3)
	peer1 := net.JoinHostPort("127.0.0.1", strconv.Itoa(m1.cfg.EtcdPeerPort))
	removed, err := tls.LoadX509KeyPair(filepath.Join(m3.dir, "certs", "node.crt"), filepath.Join(m3.dir, "certs", "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m1.rootPEM())
	tlsCfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{removed}, MinVersion: tls.VersionTLS12}

	// One connection, opened while manager 3 is a member; the client may
	// never dial again, so a request that fails shows that connection
	// closed.
	var dials atomic.Int32
	kept := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsCfg,
		MaxConnsPerHost: 1,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) > 1 {
				return nil, errors.New("test: no second connection")
			}
			return (&tls.Dialer{Config: tlsCfg}).DialContext(ctx, network, addr)
		},
	}}
	get := func(c *http.Client) error {
		resp, err := c.Get("https://" + peer1 + "/members")
		if err != nil {
			return err
		}
		// Read to the end, so the connection is reused.
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	if err := get(kept); err != nil {
		t.Fatalf("before the removal: %v", err)
	}
	// Keep it busy (well inside etcd's 5 s read timeout) until it fails.
	closed := make(chan time.Time, 1)
	go func() {
		for {
			if err := get(kept); err != nil {
				t.Logf("the kept connection: %v", err)
				closed <- time.Now()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	m3.stop()
	if _, err := m1.admin().RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: m3.NodeID(), Force: true}); err != nil {
		t.Fatal(err)
	}
	// When a fresh connection is refused, m1's member has the new CRL.
	fresh := func() error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}}
		return get(c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for fresh() == nil {
		if time.Now().After(deadline) {
			t.Fatal("a new connection with the removed manager's certificate is still accepted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	refused := time.Now()
	select {
	case at := <-closed:
		t.Logf("the removed manager's open connection closed %v after new ones were refused", at.Sub(refused).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatal("the removed manager's busy peer connection still works 3 s after its certificate was refused for new ones")
	}

	// The remaining members reconnected: the cluster takes writes.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := m1.admin().CreateSecret(wctx, &adminapi.CreateSecretRequest{Spec: &types.SecretSpec{Name: "after-drop"}, Data: []byte("x")}); err != nil {
		t.Fatalf("write after the peer connections were dropped: %v", err)
	}
}
