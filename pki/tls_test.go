package pki

import (
	"crypto/tls"
	"errors"
	"testing"
)

// TestClientTLSVerifiesTheManager: a client dials a manager only if its
// certificate is from the cluster's root and names ManagerDNSName.
func TestClientTLSVerifiesTheManager(t *testing.T) {
	real, other := newTestCA(t, "real"), newTestCA(t, "other")
	tests := []struct {
		name   string
		server tls.Certificate
		ok     bool
	}{
		{"a manager of the cluster", real.serverCert(t, ManagerDNSName, "mgr1.example"), true},
		{"a worker of the cluster (no manager name)", real.serverCert(t, "node-1"), false},
		{"a certificate with no name", real.serverCert(t), false},
		{"a manager of another cluster", other.serverCert(t, ManagerDNSName), false},
	}
	pool, err := RootPool(real.pem)
	if err != nil {
		t.Fatal(err)
	}
	client := real.serverCert(t) // any certificate of the cluster
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tt.server}, ClientAuth: tls.RequireAnyClientCert})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			gotClient := make(chan int, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() == nil {
					gotClient <- len(tc.ConnectionState().PeerCertificates)
				}
				close(gotClient)
			}()
			// Dialled by IP: the name checked is ManagerDNSName, not the address.
			conn, err := tls.Dial("tcp", ln.Addr().String(), ClientTLS(pool, func() *tls.Certificate { return &client }))
			if tt.ok != (err == nil) {
				t.Fatalf("dial: %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				return
			}
			if conn.ConnectionState().Version != tls.VersionTLS13 {
				t.Error("not TLS 1.3")
			}
			conn.Write([]byte{0}) // finishes the server's side of the handshake
			if n := <-gotClient; n != 1 {
				t.Errorf("server saw %d client certificates, want 1", n)
			}
			conn.Close()
		})
	}
}

func TestClientTLSFromPEM(t *testing.T) {
	tests := []struct {
		name    string
		root    []byte
		wantErr error
	}{
		{"a root", newTestCA(t, "c").pem, nil},
		{"no PEM", []byte("nope"), ErrNoRoot},
		{"empty", nil, ErrNoRoot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ClientTLSFromPEM(tt.root, tls.Certificate{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err == nil && (cfg.ServerName != ManagerDNSName || cfg.MinVersion != tls.VersionTLS13 || cfg.InsecureSkipVerify) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}
