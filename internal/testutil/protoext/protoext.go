// Package protoext makes protobuf messages as a peer built from a newer
// .proto would send them, for tests of what an older reader does with
// fields it does not know.
package protoext

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// WithUnknown returns m as a peer that knows one more field (number 99,
// say a rule) would send it: decoded by this build, the field is unknown.
func WithUnknown[M proto.Message](t testing.TB, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "k8s.namespace==prod")
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}
