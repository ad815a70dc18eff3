//go:build linux

package pika

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// blockingWaitSlice bounds one ppoll, which is also bounded by the
// deadline (read or write) set when it starts. Close and a deadline
// passing (even one set during the wait, as closedLocked does) end a wait
// at once, by shutting the socket down, so the bound is only a fallback:
// long, because every wake-up of an idle connection costs a thread's
// wake-up (with 100 ms, 50 idle connections cost 20 times the CPU of the
// poller's). (A variable
// for the tests, which make it an hour to show that the shutdown alone
// wakes the reader.)
var blockingWaitSlice = 5 * time.Second

// pollFd is struct pollfd of poll(2).
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn    = 0x1    // POLLIN
	pollOut   = 0x4    // POLLOUT
	pollRdHup = 0x2000 // POLLRDHUP
)

// fdConn is a TCP connection for Config.BlockingRead, taken away from the
// runtime's network poller: its descriptor is a dup of the dialled
// connection's, whose own is closed, which removes the socket from the
// poller's epoll set. Read calls read(2) itself and, when nothing is
// there, waits in ppoll(2), a system call that blocks its thread (the
// runtime hands the thread's P to other goroutines when the wait lasts).
// The broker's bytes then wake that thread alone: no thread in epoll_wait,
// no futex wake-up of the reader's goroutine, no trip through the
// scheduler. Write writes with write(2), waiting in ppoll when the socket
// buffer is full.
//
// (Keeping the net.TCPConn and waiting in ppoll inside its
// RawConn.Read, the first version, cost more CPU than the poller: the
// socket stayed in the runtime's epoll set, so every segment from the
// broker woke a thread in epoll_wait as well as the reader. See
// BENCHMARKS.md.)
type fdConn struct {
	fd            int
	local, remote net.Addr

	mu       sync.Mutex
	ops      int  // Read and Write calls in progress
	closing  bool // Close was called: fd is shut down
	fdClosed bool
	rdl, wdl time.Time   // deadlines
	rt, wt   *time.Timer // shut a direction down at its deadline
	efd      int         // eventfd that ends a linger (Config.ReadLinger); -1 without
}

// newFdConn returns nc's socket as an fdConn, closing nc, or nil (nc
// untouched) when nc offers no SyscallConn (TLS, a wrapper), its
// descriptor is no non-blocking stream socket or the dup fails.
func newFdConn(nc net.Conn) *fdConn {
	tc, ok := nc.(interface {
		net.Conn
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	nfd := -1
	if err := rc.Control(func(fd uintptr) {
		if !streamSocket(int(fd)) {
			return
		}
		syscall.ForkLock.RLock()
		if d, err := syscall.Dup(int(fd)); err == nil {
			syscall.CloseOnExec(d)
			nfd = d
		}
		syscall.ForkLock.RUnlock()
	}); err != nil || nfd < 0 {
		return nil
	}
	c := &fdConn{fd: nfd, local: tc.LocalAddr(), remote: tc.RemoteAddr(), efd: -1}
	tc.Close() // the dup keeps the socket open
	return c
}

// enableLinger gives c the eventfd that unlinger signals; false when the
// system refuses one (the reader then never lingers).
func (c *fdConn) enableLinger() bool {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		return false
	}
	c.efd = int(fd)
	return true
}

// linger waits d (Config.ReadLinger) without reading, so that the
// broker's writes meanwhile pile up in the socket for one read; less when
// unlinger is called or the connection is closed or shut down (the
// socket's POLLRDHUP and POLLHUP end the wait; its data does not).
func (c *fdConn) linger(d time.Duration) {
	if c.efd < 0 || !c.acquire() {
		return
	}
	defer c.release()
	pfd := [2]pollFd{{fd: int32(c.fd), events: pollRdHup}, {fd: int32(c.efd), events: pollIn}}
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 2, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if pfd[1].revents&pollIn != 0 {
		var b [8]byte
		syscall.Read(c.efd, b[:]) // reset the counter
	}
}

// unlinger ends a linger in progress, or the next one, at once.
func (c *fdConn) unlinger() {
	if c.efd < 0 || !c.acquire() {
		return
	}
	defer c.release()
	one := [8]byte{1}
	syscall.Write(c.efd, one[:])
}

// streamSocket reports whether fd is a stream socket in non-blocking
// mode: fdConn ends waits by shutting the socket down, which other files
// (a pipe, say) cannot do, and waits in ppoll, not in read(2) or write(2).
func streamSocket(fd int) bool {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil || typ != syscall.SOCK_STREAM {
		return false
	}
	fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	return errno == 0 && fl&syscall.O_NONBLOCK != 0
}

// acquire notes a Read or Write in progress, so that Close leaves the
// descriptor open (it could otherwise be reused for another file while
// they use it); false once Close was called.
func (c *fdConn) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.ops++
	return true
}

func (c *fdConn) release() {
	c.mu.Lock()
	c.ops--
	c.closeIfDoneLocked()
	c.mu.Unlock()
}

// closeIfDoneLocked closes the descriptor once Close was called and no
// Read or Write uses it.
func (c *fdConn) closeIfDoneLocked() {
	if c.closing && c.ops == 0 && !c.fdClosed {
		c.fdClosed = true
		syscall.Close(c.fd)
		if c.efd >= 0 {
			syscall.Close(c.efd)
		}
		for _, tm := range []*time.Timer{c.rt, c.wt} {
			if tm != nil {
				tm.Stop()
			}
		}
	}
}

// poll waits for events on the socket (a descriptor Read and Write keep
// open: see acquire), up to blockingWaitSlice or until deadline.
func (c *fdConn) poll(events int16, deadline time.Time) syscall.Errno {
	pfd := pollFd{fd: int32(c.fd), events: events}
	wait := blockingWaitSlice
	if !deadline.IsZero() {
		wait = min(wait, max(time.Until(deadline), 0))
	}
	ts := syscall.NsecToTimespec(int64(wait))
	// syscall.Syscall6, not RawSyscall: the runtime must know the thread
	// is in a system call, to hand its P over when the wait lasts.
	_, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return errno
}

func (c *fdConn) deadline(read bool) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if read {
		return c.rdl
	}
	return c.wdl
}

func (c *fdConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil // read(2) would return 0, which means EOF
	}
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	for {
		d := c.deadline(true)
		if !d.IsZero() && !time.Now().Before(d) {
			return 0, os.ErrDeadlineExceeded
		}
		n, err := syscall.Read(c.fd, b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		default:
			return n, nil
		}
		if errno := c.poll(pollIn, d); errno != 0 && errno != syscall.EINTR {
			return 0, os.NewSyscallError("ppoll", errno)
		}
	}
}

func (c *fdConn) Write(b []byte) (int, error) {
	if !c.acquire() {
		return 0, net.ErrClosed
	}
	defer c.release()
	done := 0
	for done < len(b) {
		d := c.deadline(false)
		if !d.IsZero() && !time.Now().Before(d) {
			return done, os.ErrDeadlineExceeded
		}
		n, err := syscall.Write(c.fd, b[done:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if errno := c.poll(pollOut, d); errno != 0 && errno != syscall.EINTR {
				return done, os.NewSyscallError("ppoll", errno)
			}
			continue
		case err != nil:
			return done, os.NewSyscallError("write", err)
		}
		done += n
	}
	return done, nil
}

// Close shuts the socket down (ending a ppoll in progress) and closes the
// descriptor once no Read or Write is in it.
func (c *fdConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	c.closing = true
	syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	c.closeIfDoneLocked()
	return nil
}

func (c *fdConn) LocalAddr() net.Addr  { return c.local }
func (c *fdConn) RemoteAddr() net.Addr { return c.remote }

func (c *fdConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline. When it passes, the read side
// is shut down, which ends a Read's wait in ppoll at once, even one begun
// before the deadline was set.
func (c *fdConn) SetReadDeadline(t time.Time) error {
	c.setDeadline(t, &c.rdl, &c.rt, syscall.SHUT_RD)
	return nil
}

// SetWriteDeadline sets the write deadline. When it passes, the write
// side is shut down, which ends a Write's wait for room in the socket
// buffer at once: closedLocked bounds the final flush with one while the
// writer may already wait, begun without a deadline.
func (c *fdConn) SetWriteDeadline(t time.Time) error {
	c.setDeadline(t, &c.wdl, &c.wt, syscall.SHUT_WR)
	return nil
}

// setDeadline sets *dl to t and arms *tm to shut the socket down (how) at
// t. An expired deadline thus ends its direction for good: the link ends
// a connection with them and never moves one back.
func (c *fdConn) setDeadline(t time.Time, dl *time.Time, tm **time.Timer, how int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*dl = t
	if *tm != nil {
		(*tm).Stop()
		*tm = nil
	}
	if t.IsZero() || c.fdClosed {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		syscall.Shutdown(c.fd, how)
		return
	}
	*tm = time.AfterFunc(wait, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		// A timer stopped after it fired finds its deadline replaced.
		if dl.Equal(t) && !c.fdClosed {
			syscall.Shutdown(c.fd, how)
		}
	})
}
