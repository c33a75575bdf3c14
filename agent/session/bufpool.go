package session

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// gRPC reads every message of the stream, secret data included, into
// buffers it recycles or drops for the garbage collector, which reuses the
// memory without clearing it. Two changes keep the plaintext from
// lingering there once a message is applied.

// zeroingPool is gRPC's buffer pool with one change: a buffer is zeroed
// before it goes back to the pool. Large frames are read into these.
type zeroingPool struct{ inner mem.BufferPool }

func newZeroingPool() mem.BufferPool { return zeroingPool{inner: mem.DefaultBufferPool()} }

func (p zeroingPool) Get(length int) *[]byte { return p.inner.Get(length) }

func (p zeroingPool) Put(b *[]byte) {
	clear((*b)[:cap(*b)])
	p.inner.Put(b)
}

// zeroingCodec is the proto codec, except that Unmarshal zeroes the bytes
// it decoded from. Small frames (under gRPC's 1 KiB pooling threshold) are
// plain heap slices that no pool ever sees, so the codec is the one place
// that can clear them.
type zeroingCodec struct{}

func (zeroingCodec) Name() string { return "proto" }

func (zeroingCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (zeroingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal: %T is not a proto message", v)
	}
	var err error
	if len(data) == 1 {
		err = proto.Unmarshal(data[0].ReadOnlyData(), m)
	} else {
		flat := data.Materialize()
		err = proto.Unmarshal(flat, m)
		clear(flat)
	}
	for _, b := range data {
		// ReadOnlyData is the buffer's own memory; the message is decoded
		// (proto copies bytes fields), so nothing reads it again.
		clear(b.ReadOnlyData())
	}
	return err
}

// scrubConn is the TCP connection under TLS. crypto/tls decrypts each
// record in place in its input buffer and keeps the buffer, so the
// plaintext of a record outlives it until later records happen to cover
// it. That buffer reads from this conn into its free space: clearing the
// space before every read wipes all consumed plaintext as soon as TLS needs
// more bytes, which is right after a message has been read in full.
type scrubConn struct{ net.Conn }

func (c scrubConn) Read(p []byte) (int, error) {
	clear(p)
	return c.Conn.Read(p)
}

func dialScrubbed(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return scrubConn{conn}, nil
}
