package dispatcher

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
	"github.com/lockbox-project/lockbox/api/types"
)

// decode turns what a session sends into the message an agent reads.
func decode(v any) (*dapi.SessionMessage, error) {
	data, err := Codec{}.Marshal(v)
	if err != nil {
		return nil, err
	}
	defer data.Free()
	m := &dapi.SessionMessage{}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data.Materialize())}, m); err != nil {
		return nil, fmt.Errorf("decode session message: %w", err)
	}
	return m, nil
}

func TestEncodedMessageIsTheProtobufMessage(t *testing.T) {
	big := make([]byte, 5000)
	for i := range big {
		big[i] = byte(i)
	}
	secret := func(name string, data []byte) *dapi.AssignmentChange {
		return &dapi.AssignmentChange{Assignment: &dapi.Assignment{Item: &dapi.Assignment_Secret{Secret: &dapi.SecretData{Id: "id-" + name, Name: name, Data: data}}}}
	}
	svc := &dapi.AssignmentChange{Action: dapi.AssignmentChange_REMOVE, Assignment: &dapi.Assignment{Item: &dapi.Assignment_Service{Service: &dapi.ServiceGrants{
		ServiceId: "svc", ServiceName: "web", Grants: []*dapi.Grant{{SecretId: "id-a", SecretName: "a", Target: &types.FileTarget{Name: "a", Uid: "0", Mode: 0o400}}},
	}}}}
	for name, want := range map[string]*dapi.SessionMessage{
		"empty":      {},
		"complete":   {Revision: 1, NodeId: "n1", HeartbeatPeriodMs: 5000, Managers: []string{"10.0.0.1:4243"}},
		"large rev":  {Type: dapi.SessionMessage_INCREMENTAL, Revision: 1 << 62, NodeId: "node"},
		"changes":    {Type: dapi.SessionMessage_INCREMENTAL, Revision: 7, NodeId: "n", Managers: []string{"a:1", "b:2"}, Changes: []*dapi.AssignmentChange{secret("small", []byte("x")), svc}},
		"big secret": {Revision: 9, Changes: []*dapi.AssignmentChange{secret("big", big), secret("empty", nil)}},
	} {
		t.Run(name, func(t *testing.T) {
			m := &encodedMessage{rev: int64(want.Revision), revHead: revHeader(want.Type, int64(want.Revision)), sessHead: sessionHeader(want.NodeId, want.HeartbeatPeriodMs, want.Managers)}
			for _, c := range want.Changes {
				enc, err := encodeChange(c, c.GetAssignment().GetSecret() != nil)
				if err != nil {
					t.Fatal(err)
				}
				m.changes = append(m.changes, enc)
			}
			got, err := decode(m)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded\n%v\nwant\n%v", got, want)
			}
			for _, c := range m.changes {
				c.Free()
			}
		})
	}
}

// A secret's encoding is zeroed when its last reference goes, whoever
// holds it last.
func TestSecretEncodingZeroedAfterLastReference(t *testing.T) {
	c := &dapi.AssignmentChange{Assignment: &dapi.Assignment{Item: &dapi.Assignment_Secret{Secret: &dapi.SecretData{Id: "i", Name: "s", Data: []byte("hunter2")}}}}
	enc, err := encodeChange(c, true)
	if err != nil {
		t.Fatal(err)
	}
	raw := enc.ReadOnlyData()
	raw = raw[:cap(raw)]
	m := &encodedMessage{revHead: revHeader(0, 1), sessHead: sessionHeader("n", 0, nil), changes: []mem.Buffer{enc}}
	sent, err := Codec{}.Marshal(m) // what gRPC holds until written
	if err != nil {
		t.Fatal(err)
	}
	enc.Free() // the dispatcher is done with it
	if !contains(raw, "hunter2") {
		t.Fatal("secret zeroed while gRPC still holds it")
	}
	sent.Free() // gRPC wrote it
	for i, b := range raw {
		if b != 0 {
			t.Fatalf("byte %d of the encoding is %#x after the last reference", i, b)
		}
	}
}

func contains(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return true
		}
	}
	return false
}
