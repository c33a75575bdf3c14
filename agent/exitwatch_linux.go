package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWatch tells the agent, within milliseconds, that the process of a
// container it holds has exited: a pidfd per watched process, all in one
// epoll set, waited on by one goroutine. A pidfd becomes readable when its
// process exits (zombie or reaped), and names that process and no other, so
// a pid the kernel hands to a new process cannot be mistaken for it.
//
// Each watch gets a key that is never reused (the epoll data), so that an
// event read just before its pidfd is closed, and a new pidfd reusing the fd
// number, cannot be confused.
type exitWatch struct {
	epfd int
	// ep owns epfd, and rc waits on it in the Go runtime's netpoller (see
	// loop).
	ep     *os.File
	rc     syscall.RawConn
	wakeFd int // eventfd: stops the loop
	onExit func(id string, who identity)

	mu     sync.Mutex
	byKey  map[uint64]*pidWatch
	byID   map[string]uint64
	next   uint64
	closed bool
	done   chan struct{} // closed when the loop has returned; nil until start
}

type pidWatch struct {
	id  string
	who identity
	fd  int
}

// wakeKey is the epoll data of wakeFd; watch keys start at 1.
const wakeKey = 0

// exitWatchKnown: this platform can watch a container's process exit.
const exitWatchKnown = true

// newExitWatch returns a watch whose loop calls onExit, from its one
// goroutine, for each watched process that exits (once, after it has
// stopped watching it). start runs the loop: watches added before it are
// reported once it runs.
func newExitWatch(onExit func(id string, who identity)) (*exitWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("exit watch: epoll: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("exit watch: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, epollEvent(wakeKey)); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("exit watch: %w", err)
	}
	// An epoll set is itself pollable (readable while one of its fds is
	// ready). Non-blocking, os.NewFile hands it to the runtime's netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("exit watch: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "lockbox-exit-watch")
	rc, err := ep.SyscallConn()
	if err != nil {
		unix.Close(wake)
		ep.Close()
		return nil, fmt.Errorf("exit watch: %w", err)
	}
	return &exitWatch{epfd: epfd, ep: ep, rc: rc, wakeFd: wake, onExit: onExit, byKey: map[uint64]*pidWatch{}, byID: map[string]uint64{}, next: wakeKey + 1}, nil
}

// epollEvent carries key in the 64 bits of epoll data (Fd and Pad).
func epollEvent(key uint64) *unix.EpollEvent {
	return &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
}

func eventKey(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// add watches who's process for container id, replacing any earlier watch
// of id. It opens a pidfd on who.Pid, then checks that the pid still has
// the recorded start time: if it does not (or the process has gone), the
// pidfd may name a process that reused the pid, and add watches nothing and
// returns errProcessGone. Any other error (a kernel without pidfd_open, no
// fd left) also watches nothing: Reap is then what finds the exit.
func (w *exitWatch) add(id string, who identity) error {
	if who.Pid <= 0 || who.PidStart == 0 {
		return errNoProcess
	}
	fd, err := unix.PidfdOpen(who.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errProcessGone
		}
		return fmt.Errorf("pidfd_open %d: %w", who.Pid, err)
	}
	// The pidfd names whatever process had the pid at pidfd_open; that is
	// who's process only if it still started when who's did.
	if start, err := pidStart(who.Pid); err != nil || start != who.PidStart {
		unix.Close(fd)
		return errProcessGone
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		unix.Close(fd)
		return errExitWatchClosed
	}
	w.forgetLocked(id)
	key := w.next
	w.next++
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, epollEvent(key)); err != nil {
		unix.Close(fd)
		return fmt.Errorf("exit watch of pid %d: %w", who.Pid, err)
	}
	w.byKey[key] = &pidWatch{id: id, who: who, fd: fd}
	w.byID[id] = key
	return nil
}

// forget stops watching id and closes its pidfd, if it is watched.
func (w *exitWatch) forget(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.forgetLocked(id)
}

func (w *exitWatch) forgetLocked(id string) {
	key, ok := w.byID[id]
	if !ok {
		return
	}
	w.dropLocked(key)
}

func (w *exitWatch) dropLocked(key uint64) *pidWatch {
	pw := w.byKey[key]
	if pw == nil {
		return nil
	}
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, pw.fd, nil)
	unix.Close(pw.fd)
	delete(w.byKey, key)
	delete(w.byID, pw.id)
	return pw
}

// watching returns how many processes are watched.
func (w *exitWatch) watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byKey)
}

// start runs the loop in its goroutine.
func (w *exitWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.done != nil {
		return
	}
	w.done = make(chan struct{})
	go w.loop(w.done)
}

// loop waits for the set in the runtime's netpoller and reads it without
// blocking. It used to block in epoll_wait, and a goroutine in a blocking
// system call keeps its processor for up to 10 ms (the runtime takes it
// back only then when there is nothing else to run): every exit the loop
// went back into epoll_wait kept the runtime's sysmon thread polling for
// that long (docs/performance.md). Parked in the netpoller, the goroutine
// holds neither a thread nor a processor.
func (w *exitWatch) loop(done chan struct{}) {
	defer close(done)
	events := make([]unix.EpollEvent, 64)
	for {
		var n int
		var werr error
		err := w.rc.Read(func(fd uintptr) bool {
			for {
				n, werr = unix.EpollWait(int(fd), events, 0)
				if !errors.Is(werr, unix.EINTR) {
					return werr != nil || n > 0
				}
			}
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			// Cannot happen with a valid epoll fd; Reap remains.
			return
		}
		var exited []*pidWatch
		w.mu.Lock()
		for i := range n {
			key := eventKey(&events[i])
			if key == wakeKey {
				w.mu.Unlock()
				return
			}
			// A key already dropped (released meanwhile) is no one's.
			if pw := w.dropLocked(key); pw != nil {
				exited = append(exited, pw)
			}
		}
		w.mu.Unlock()
		for _, pw := range exited {
			w.onExit(pw.id, pw.who)
		}
	}
}

// close stops the loop (waiting for an onExit under way) and closes every
// fd of the watch. The watched containers are left as they are.
func (w *exitWatch) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	done := w.done
	w.mu.Unlock()
	if done != nil {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(w.wakeFd, one[:])
		<-done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range w.byKey {
		w.dropLocked(key)
	}
	unix.Close(w.wakeFd)
	w.ep.Close()
}

// processExited reports whether who's process is known to have exited: a
// pidfd on its pid is readable (the process is a zombie or reaped), the
// pid is free, or it names a process that started later (who's has gone).
// It is false when it cannot tell (no pid or start time in the record, a
// kernel without pidfd_open): the caller then treats the process as
// possibly running.
func processExited(who identity) bool {
	if who.Pid <= 0 || who.PidStart == 0 {
		return false
	}
	fd, err := unix.PidfdOpen(who.Pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH)
	}
	defer unix.Close(fd)
	// The pidfd names whatever had the pid at pidfd_open: another start
	// time means who's process had gone before that.
	if start, err := pidStart(who.Pid); err == nil && start != who.PidStart {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n == 1 && fds[0].Revents&unix.POLLIN != 0
	}
}
