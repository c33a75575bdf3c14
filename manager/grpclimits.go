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
)
