package localapi

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/api/agent"
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
		pair := socketPair(t)
		h := &fakeHandler{dir: t.TempDir(), payload: "x"}
		s := NewServer(h, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.serveConn(pair[0])
		}()
		cli := pair[1]
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
