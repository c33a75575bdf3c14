package dispatcher

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// firstSettings dials a listener that is not a gRPC server with tr and
// returns the windows the client announces: the initial stream window of
// its SETTINGS (HTTP/2's 65,535 when absent) and, if readConn, the
// increment of the connection WINDOW_UPDATE that must follow.
func firstSettings(t *testing.T, tr Transport, readConn bool) (stream, conn uint32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := grpc.NewClient(ln.Addr().String(), append(tr.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("preface %q: %v", preface, err)
	}
	fr := http2.NewFramer(c, c)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	stream = 65535
	if v, ok := sf.Value(http2.SettingInitialWindowSize); ok {
		stream = v
	}
	if readConn {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		wu, ok := f.(*http2.WindowUpdateFrame)
		if !ok || wu.StreamID != 0 {
			t.Fatalf("second frame %v, want a connection WINDOW_UPDATE", f)
		}
		conn = wu.Increment
	}
	return stream, conn
}

func TestTransportWindows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tr         Transport
		wantStream uint32
		fixedConn  bool
	}{
		// What agents use: a fixed window announced up front, for the
		// stream and (by WINDOW_UPDATE) the connection.
		{"agents", Transport{}, SessionWindow, true},
		// gRPC's default: 64 KiB, grown later by BDP estimation.
		{"adaptive", Transport{AdaptiveWindow: true}, 65535, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, conn := firstSettings(t, tc.tr, tc.fixedConn)
			if stream != tc.wantStream {
				t.Errorf("initial stream window %d, want %d", stream, tc.wantStream)
			}
			if tc.fixedConn && conn+65535 != SessionWindow {
				t.Errorf("connection window raised by %d, want to %d", conn, SessionWindow)
			}
		})
	}
}
