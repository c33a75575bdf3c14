//go:build linux || windows

package localapi

import (
	"io"
	"sync"
)

// conns is a server's bookkeeping, the same on every transport: its
// listener, the connections being served, and whether Close has run.
type conns struct {
	mu     sync.Mutex
	ln     io.Closer
	open   map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// listen records ln; false (and ln closed) when the server is closed.
func (c *conns) listen(ln io.Closer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		ln.Close()
		return false
	}
	c.ln = ln
	return true
}

func (c *conns) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// serve runs fn for conn in its own goroutine, tracked until it returns;
// false (and conn closed) when the server is closed.
func (c *conns) serve(conn io.Closer, fn func()) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return false
	}
	if c.open == nil {
		c.open = map[io.Closer]struct{}{}
	}
	c.open[conn] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		fn()
		c.mu.Lock()
		delete(c.open, conn)
		c.mu.Unlock()
	}()
	return true
}

// close stops the listener, closes every connection and waits for the
// requests in flight.
func (c *conns) close() error {
	c.mu.Lock()
	c.closed = true
	var err error
	if c.ln != nil {
		err = c.ln.Close()
	}
	for conn := range c.open {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}
