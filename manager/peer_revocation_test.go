//go:build linux

package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminapi "github.com/lockbox-project/lockbox/api/admin"
	clusterapi "github.com/lockbox-project/lockbox/api/cluster"
	"github.com/lockbox-project/lockbox/api/types"
	"github.com/lockbox-project/lockbox/manager/etcd"
	"github.com/lockbox-project/lockbox/manager/store"
)

// peerProbe is one request to an etcd peer endpoint.
type peerProbe struct {
	method, path string
	// mustRead: a certificate etcd accepts gets 200 here (a read); the
	// other probes only need an HTTP answer, which proves the request
	// reached etcd's handler.
	mustRead bool
}

var peerProbes = []peerProbe{
	{"GET", "/members", true},
	{"GET", "/version", true},
	{"GET", "/raft/probing", false},
	{"GET", "/raft/stream/msgapp/1", false},
	{"GET", "/raft/stream/message/1", false},
	// A raft message (the pipeline) and a snapshot: writes.
	{"POST", "/raft", false},
	{"POST", "/raft/snapshot", false},
}

// peerRequest sends one probe to peer with cert over a fresh connection
// (no keep-alive: every request makes etcd check the certificate anew).
// It returns the HTTP status, or an error when no answer came back.
func peerRequest(t testing.TB, peer string, root []byte, cert tls.Certificate, p peerProbe) (int, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}
	var body io.Reader
	if p.method == "POST" {
		// Not a valid raft message: reaching the handler is enough to
		// show the port takes writes from this certificate.
		body = strings.NewReader("\x08\x03\x10\x01")
	}
	req, err := http.NewRequest(p.method, "https://"+peer+p.path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// checkPeerAccepts fails unless every probe reaches etcd with cert.
func checkPeerAccepts(t testing.TB, peer string, root []byte, cert tls.Certificate, who string) {
	t.Helper()
	for _, p := range peerProbes {
		code, err := peerRequest(t, peer, root, cert, p)
		if err != nil {
			t.Fatalf("%s: %s %s on %s refused: %v", who, p.method, p.path, peer, err)
		}
		if p.mustRead && code != http.StatusOK {
			t.Fatalf("%s: %s %s on %s: status %d", who, p.method, p.path, peer, code)
		}
	}
}

// TestRemovedManagerIsRefusedByEtcdPeers: after `node rm` of a manager,
// its certificate (read from its data dir) can neither read a remaining
// member's peer endpoints nor post raft messages to it: the TLS
// connection is refused, on the manager that removed it and on the one
// that only followed the store. Before the removal the same certificate
// gets every answer, and a remaining manager's certificate still does
// after it. The removed manager has also left etcd's membership, and a
// join with a plain-http peer URL is refused.
func TestRemovedManagerIsRefusedByEtcdPeers(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	// Manager tokens are single-use: one per join.
	cfg2, cfg3 := testConfig(t, "127.0.0.2"), testConfig(t, "127.0.0.3")
	cfg2.JoinAddr, cfg2.JoinToken = m1.Addr(), []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)
	cfg3.JoinAddr, cfg3.JoinToken = m1.Addr(), []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m3 := startManager(t, cfg3)
	root := m1.rootPEM()
	peer1 := net.JoinHostPort("127.0.0.1", strconv.Itoa(m1.cfg.EtcdPeerPort))
	peer2 := net.JoinHostPort("127.0.0.2", strconv.Itoa(m2.cfg.EtcdPeerPort))
	loadCert := func(tm *testManager) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(tm.dir, "certs", "node.crt"), filepath.Join(tm.dir, "certs", "node.key"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	removed, kept := loadCert(m3), loadCert(m2)

	// Positive control: today's certificate of manager 3 reads and posts.
	for _, peer := range []string{peer1, peer2} {
		checkPeerAccepts(t, peer, root, removed, "manager 3 before its removal")
	}

	// A join must give an https peer URL (checked before any member is
	// added).
	conn := dialTLS(t, m1.Addr(), root, kept)
	for _, u := range []string{"http://127.0.0.9:4243", "unix:///tmp/x", "https://127.0.0.9", "127.0.0.9:4243"} {
		if _, err := clusterapi.NewClusterClient(conn).Join(ctx, &clusterapi.JoinRequest{PeerUrl: u}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("join with peer URL %q: %v, want InvalidArgument", u, err)
		}
	}

	m3.stop()
	if _, err := m1.admin().RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: m3.NodeID(), Force: true}); err != nil {
		t.Fatal(err)
	}

	// Every manager copies the new CRL to its member's file as it sees
	// it: wait (bounded) until each refuses, then check every endpoint.
	for _, peer := range []string{peer1, peer2} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := peerRequest(t, peer, root, removed, peerProbes[0])
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still accepts the removed manager's certificate", peer)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, p := range peerProbes {
			if code, err := peerRequest(t, peer, root, removed, p); err == nil {
				t.Errorf("removed manager: %s %s on %s answered %d", p.method, p.path, peer, code)
			}
		}
		checkPeerAccepts(t, peer, root, kept, "manager 2 after the removal")
	}

	// The removed manager is no etcd member any more.
	ep := "unix://" + etcd.ClientSocket(filepath.Join(m1.dir, "etcd"))
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cli, err := etcd.Connect(cctx, []string{ep}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.MemberList(cctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mem := range list.Members {
		names = append(names, mem.Name)
		if mem.Name == m3.NodeID() {
			t.Fatalf("removed manager %s is still an etcd member", mem.Name)
		}
	}
	if len(list.Members) != 2 {
		t.Fatalf("members after removal: %v", names)
	}
}

// A manager that joined before certificate serials were recorded at
// issue time (simulated by deleting the record) still has its current
// certificate listed in the CRL when it is removed: the serial on its node
// record is recorded then. A worker's is recorded but not listed: it
// cannot reach a peer port.
func TestRemovalListsTheNodeRecordsSerial(t *testing.T) {
	ctx := context.Background()
	m1 := startManager(t, testConfig(t, "127.0.0.1"))
	cfg2 := testConfig(t, "127.0.0.2")
	cfg2.JoinAddr, cfg2.JoinToken = m1.Addr(), []byte(token(t, m1.admin(), types.NodeRole_NODE_ROLE_MANAGER, false))
	m2 := startManager(t, cfg2)
	w := joinNode(t, m1.Addr(), token(t, m1.admin(), types.NodeRole_NODE_ROLE_WORKER, false), "old")
	n2, err := m1.Store().GetNode(ctx, m2.NodeID())
	if err != nil {
		t.Fatal(err)
	}
	mserial, wserial := n2.GetCertificate().GetSerial(), w.cert.Leaf.SerialNumber.Text(16)
	for node, serial := range map[string]string{m2.NodeID(): mserial, w.id: wserial} {
		if _, err := m1.Store().Client().Delete(ctx, store.DefaultPrefix+"cluster/certs/"+node+"/"+serial); err != nil {
			t.Fatal(err)
		}
	}
	// Removed while it runs: with two members, a stopped one would take
	// the quorum with it.
	for _, id := range []string{w.id, m2.NodeID()} {
		if _, err := m1.admin().RemoveNode(ctx, &adminapi.RemoveNodeRequest{NameOrId: id, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	der, _, err := m1.Store().CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[e.SerialNumber.Text(16)] = true
	}
	if !listed[mserial] || listed[wserial] {
		t.Fatalf("CRL %v: want the removed manager's %s, not the worker's %s", listed, mserial, wserial)
	}
}
