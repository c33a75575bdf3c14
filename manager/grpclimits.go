package manager

import (
	"github.com/lockbox-project/lockbox/manager/admin"
)

// The gRPC servers' limits, in one place.
const (
	// maxRecvMsgSize is the largest request a manager reads: the biggest
	// one is CreateSecret, a secret's data (below admin.MaxSecretSize)
	// plus its spec, labels and protobuf framing, for which 64 KiB is
	// ample. Anything larger is refused with ResourceExhausted before it
	// is decoded.
	maxRecvMsgSize = admin.MaxSecretSize + 64<<10
	// maxConcurrentStreams bounds the streams of one connection: an agent
	// holds one session and a few unary calls; an admin client a few
	// calls.
	maxConcurrentStreams = 64

	// Per-connection buffers: a manager holds one connection per agent,
	// thousands of them mostly idle, so what each keeps between messages
	// is what a manager's memory grows by per agent (docs/performance.md).
	//
	// writeBufferSize batches a connection's frames into TLS records. gRPC
	// takes it from a pool for each write and gives it back once flushed
	// (its shared write buffer), so idle connections hold none; but a
	// fan-out writes to every connection at once, and the pool then grows
	// to one buffer per connection, resident long after. 4 KiB holds a
	// typical INCREMENTAL message; a larger one (a COMPLETE set, a big
	// secret) is flushed in 4 KiB records. Against 16 KiB, same runs at
	// 1,000 streams: RSS per stream after the updates 61.6–64.5 KB against
	// 68.2–74.6, the fan-out's p99 and CPU unchanged (docs/performance.md).
	writeBufferSize = 4 << 10
	// readBufferSize is 0: no bufio.Reader between HTTP/2 and TLS. TLS
	// already keeps each decrypted record in memory and hands it out in
	// whatever pieces the HTTP/2 framer asks for, so a second buffer
	// saved no system calls, only cost 4 KiB per connection, held for
	// the connection's life. (Measured: docs/performance.md.)
	readBufferSize = 0
)
