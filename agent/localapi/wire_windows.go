package localapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/protobuf/proto"

	"github.com/lockbox-project/lockbox/internal/agentsocket"
)

// MaxMessageSize bounds one message, as on Linux: a caller of either
// platform can rely on the same limit.
const MaxMessageSize = 128 << 10

// DefaultSocket is where the agent listens unless told otherwise: a named
// pipe, Windows' counterpart of the Linux agent socket.
const DefaultSocket = agentsocket.Default

var errTruncated = errors.New("message larger than the message limit")

// The pipe is a message-type pipe and every message is written with one
// WriteFile, so each Request and Response is one pipe message. The reading
// handle, though, is in byte read mode (go-winio opens both ends that way
// and turns ERROR_MORE_DATA into a short read), so a reader cannot tell
// where a message ends from the read alone. Each message therefore starts
// with its length, 4 bytes little-endian: the reader reads exactly that
// much, whatever read mode the handle is in, and refuses a length over the
// limit before reading it.
const lenSize = 4

// writeMsg marshals m and writes it as one pipe message.
func writeMsg(c net.Conn, m proto.Message) error {
	b := make([]byte, lenSize, lenSize+proto.Size(m))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	n := len(b) - lenSize
	if n > MaxMessageSize {
		return fmt.Errorf("send %d bytes: %w", n, errTruncated)
	}
	binary.LittleEndian.PutUint32(b, uint32(n))
	w, err := c.Write(b)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if w != len(b) {
		return fmt.Errorf("send: short write %d/%d", w, len(b))
	}
	return nil
}

// readMsg reads one message into m. Its buffer is the message's own size,
// known from the length before the bytes: a small request costs a small
// allocation, not the limit's 128 KiB (the Linux side, whose datagrams
// come without a length, keeps limit-sized buffers in a pool instead). The
// bytes are cleared once decoded. A pipe closed between messages is io.EOF.
func readMsg(c io.Reader, m proto.Message) error {
	var hdr [lenSize]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > MaxMessageSize {
		return fmt.Errorf("receive %d bytes: %w", n, errTruncated)
	}
	buf := make([]byte, n)
	defer clear(buf)
	if _, err := io.ReadFull(c, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("receive: %w", err)
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return fmt.Errorf("unmarshal: %w", err)
	}
	return nil
}
