package dispatcher

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	gproto "google.golang.org/protobuf/proto"

	dapi "github.com/lockbox-project/lockbox/api/dispatcher"
)

// Session messages leave the dispatcher already encoded. A fan-out
// marshals each distinct AssignmentChange once, as a complete "changes"
// field of a SessionMessage; every session that sends it writes those same
// bytes after its own few header fields (protobuf fields may come in any
// order, and a message is the concatenation of its fields). Ten thousand
// nodes receiving one secret cost one marshal and one copy of its data,
// not ten thousand.

// SessionMessage field numbers (api/dispatcher/dispatcher.proto).
const (
	fieldType      protowire.Number = 1
	fieldRevision  protowire.Number = 2
	fieldChanges   protowire.Number = 3
	fieldManagers  protowire.Number = 4
	fieldNodeID    protowire.Number = 5
	fieldHeartbeat protowire.Number = 6
)

// encodedMessage is a SessionMessage as wire bytes, in three parts that
// are each encoded once and shared: revHead (type and revision: the same
// for every session a fan-out reaches), sessHead (the session's own node
// ID, heartbeat period and manager list: the same for every message of the
// session) and changes (each distinct change of a fan-out, shared by every
// session that sends it). Only Codec knows how to send it.
type encodedMessage struct {
	rev      int64 // for tests and benchmarks; also in revHead
	revHead  mem.Buffer
	sessHead mem.Buffer
	changes  []mem.Buffer
}

// revHeader encodes the type and revision fields of a SessionMessage.
func revHeader(typ dapi.SessionMessage_Type, rev int64) mem.Buffer {
	b := make([]byte, 0, 2*(1+protowire.SizeVarint(uint64(max(rev, int64(typ))))))
	if typ != 0 {
		b = protowire.AppendTag(b, fieldType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(typ))
	}
	if rev != 0 {
		b = protowire.AppendTag(b, fieldRevision, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(rev))
	}
	return mem.SliceBuffer(b)
}

// sessionHeader encodes the fields of a SessionMessage that belong to the
// session rather than to one message: node ID, heartbeat period, managers.
func sessionHeader(nodeID string, heartbeatMS uint32, managers []string) mem.Buffer {
	n := protowire.SizeTag(fieldNodeID) + protowire.SizeBytes(len(nodeID)) +
		protowire.SizeTag(fieldHeartbeat) + protowire.SizeVarint(uint64(heartbeatMS))
	for _, m := range managers {
		n += protowire.SizeTag(fieldManagers) + protowire.SizeBytes(len(m))
	}
	b := make([]byte, 0, n)
	for _, m := range managers {
		b = protowire.AppendTag(b, fieldManagers, protowire.BytesType)
		b = protowire.AppendString(b, m)
	}
	if nodeID != "" {
		b = protowire.AppendTag(b, fieldNodeID, protowire.BytesType)
		b = protowire.AppendString(b, nodeID)
	}
	if heartbeatMS != 0 {
		b = protowire.AppendTag(b, fieldHeartbeat, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(heartbeatMS))
	}
	return mem.SliceBuffer(b)
}

// encodeChange marshals c as one "changes" field of a SessionMessage. The
// result holds one reference. When secret is true its bytes are zeroed once
// the last reference is freed, by the dispatcher or by gRPC's writer
// (whichever finishes last), so secret data does not outlive its sending.
func encodeChange(c *dapi.AssignmentChange, secret bool) (mem.Buffer, error) {
	size := gproto.Size(c)
	n := protowire.SizeTag(fieldChanges) + protowire.SizeBytes(size)
	capacity := n
	if secret {
		// gRPC reference-counts (and returns to their pool) only buffers
		// above its pooling threshold; smaller ones are plain slices
		// nobody would zero.
		for mem.IsBelowBufferPoolingThreshold(capacity) {
			capacity *= 2
		}
	}
	b := make([]byte, 0, capacity)
	b = protowire.AppendTag(b, fieldChanges, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b, err := gproto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, c)
	if err != nil {
		clear(b[:cap(b)])
		return nil, fmt.Errorf("encode change: %w", err)
	}
	if len(b) != n {
		clear(b[:cap(b)])
		return nil, fmt.Errorf("encode change: %d bytes, sized %d", len(b), n)
	}
	if !secret {
		return mem.SliceBuffer(b), nil
	}
	return mem.NewBuffer(&b, zeroOnFree{}), nil
}

// zeroOnFree is the "pool" of buffers holding secret data: it never hands
// one out again, it only zeroes what it is given back.
type zeroOnFree struct{}

func (zeroOnFree) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

func (zeroOnFree) Put(b *[]byte) { clear((*b)[:cap(*b)]) }

// Codec is the gRPC codec the server carrying the Dispatcher service must
// use (grpc.ForceServerCodecV2): it sends the dispatcher's pre-encoded
// session messages as they are, and marshals everything else as protobuf.
type Codec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

// Name is "proto": on the wire these are ordinary protobuf messages.
func (Codec) Name() string { return proto.Name }

// Marshal returns the bytes of v. For a pre-encoded message it takes a
// reference on each shared part for gRPC, which frees it once written; the
// only allocation is the slice that lists them.
// The same buffer object goes to many streams at once: gRPC's writer only
// reads a message's buffers (ReadOnlyData) and frees them (atomic), which
// the -race tests over real connections check on every gRPC upgrade.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*encodedMessage)
	if !ok {
		return protoCodec.Marshal(v)
	}
	out := make(mem.BufferSlice, 0, 2+len(m.changes))
	for _, h := range [...]mem.Buffer{m.revHead, m.sessHead} {
		if h != nil {
			h.Ref()
			out = append(out, h)
		}
	}
	for _, c := range m.changes {
		c.Ref()
		out = append(out, c)
	}
	return out, nil
}

// Unmarshal decodes protobuf.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	return protoCodec.Unmarshal(data, v)
}
