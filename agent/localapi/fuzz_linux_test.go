package localapi

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/lockbox-project/lockbox/api/agent"
	"google.golang.org/protobuf/proto"
)

// FuzzServeDatagram feeds arbitrary datagrams to a server connection: the
// server must answer each with a well-formed response or close, never
// panic, and never call the handler with a request it should refuse.
func FuzzServeDatagram(f *testing.F) {
	for _, r := range []*agent.Request{
		{Op: &agent.Request_List{List: &agent.ListRequest{}}},
		{Op: &agent.Request_Release{Release: &agent.ReleaseRequest{ContainerId: "c"}}},
		{Op: &agent.Request_Prepare{Prepare: &agent.PrepareRequest{Container: &agent.Container{Id: "c", Service: "web"}}}},
		{},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, datagram []byte) {
		if len(datagram) == 0 {
			return // a zero-length datagram is the peer closing
		}
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		srvFile, cliFile := os.NewFile(uintptr(fds[0]), "srv"), os.NewFile(uintptr(fds[1]), "cli")
		srvConn, err := net.FileConn(srvFile)
		srvFile.Close()
		if err != nil {
			t.Fatal(err)
		}
		cliConn, err := net.FileConn(cliFile)
		cliFile.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer cliConn.Close()
		h := &fakeHandler{dir: t.TempDir(), payload: "x"}
		s := NewServer(h, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.serveConn(srvConn.(*net.UnixConn))
		}()
		cli := cliConn.(*net.UnixConn)
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := cli.WriteMsgUnix(datagram, nil, nil); err != nil {
			t.Fatal(err)
		}
		var resp agent.Response
		files, err := recv(cli, &resp, nil)
		closeAll(files)
		if err == nil {
			var req agent.Request
			if proto.Unmarshal(datagram, &req) != nil && resp.GetError() == nil {
				t.Errorf("undecodable request answered without an error: %v", &resp)
			}
			if resp.GetError() == nil && resp.GetResult() == nil {
				t.Errorf("response with neither error nor result")
			}
		}
		cli.Close()
		<-done
	})
}
