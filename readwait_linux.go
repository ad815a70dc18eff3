//go:build linux

package pika

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// blockingWaitSlice bounds one ppoll: the reader goes back through
// RawConn.Read at least this often, which fails once the link's read
// deadline passed (closedLocked sets it). closedLocked also shuts the
// socket's read side down, which ends the ppoll at once; the bound is
// the fallback should that fail. (A variable for the tests, which make it
// long to show that the shutdown alone wakes the reader.)
var blockingWaitSlice = 100 * time.Millisecond

// blockingReader reads a TCP socket for Config.BlockingRead: the reader's
// goroutine calls read(2) on the non-blocking socket itself and, when
// nothing is there, waits in ppoll(2), a system call that blocks its
// thread, instead of parking in the runtime's network poller. Data that
// arrives then wakes that thread directly: no epoll_wait on another
// thread, no futex wake-up, no trip through the scheduler.
type blockingReader struct {
	rc        syscall.RawConn
	closeRead func() error
	fn        func(fd uintptr) bool // wait, made once
	slice     syscall.Timespec      // blockingWaitSlice

	// the current Read's buffer and the callback's results
	buf  []byte
	n    int
	err  error
	done bool
}

// newBlockingReader returns a blockingReader for nc, or nil when nc is
// not a socket this works on (TLS, a wrapper of the application's Dial).
func newBlockingReader(nc net.Conn) *blockingReader {
	sc, ok := nc.(interface {
		SyscallConn() (syscall.RawConn, error)
		CloseRead() error
	})
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &blockingReader{rc: rc, closeRead: sc.CloseRead, slice: syscall.NsecToTimespec(int64(blockingWaitSlice))}
	r.fn = r.wait
	return r
}

// Read reads into buf as net.Conn's Read does.
func (r *blockingReader) Read(buf []byte) (int, error) {
	r.buf = buf
	defer func() { r.buf = nil }()
	for {
		r.n, r.err, r.done = 0, nil, false
		// RawConn.Read holds a reference on the descriptor while wait
		// runs (a concurrent Close does not close it under us) and fails
		// once the read deadline passed or the socket closed.
		if err := r.rc.Read(r.fn); err != nil {
			return 0, err
		}
		if r.done {
			return r.n, r.err
		}
	}
}

// pollFd is struct pollfd of poll(2).
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const pollIn = 0x1 // POLLIN

// wait is RawConn.Read's callback: it reads what the socket holds, or
// waits in ppoll for up to blockingWaitSlice and reads then. It returns
// true always (so the runtime's poller never waits for it); r.done tells
// Read whether it read something or should call again.
func (r *blockingReader) wait(fd uintptr) bool {
	for {
		n, err := syscall.Read(int(fd), r.buf)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
		case err != nil:
			r.err, r.done = os.NewSyscallError("read", err), true
			return true
		case n == 0:
			r.err, r.done = io.EOF, true
			return true
		default:
			r.n, r.done = n, true
			return true
		}
		pfd := pollFd{fd: int32(fd), events: pollIn}
		ts := r.slice // ppoll may change it
		// syscall.Syscall6 (not RawSyscall): the runtime knows the
		// thread is in a system call and hands its P to other goroutines
		// when the wait lasts.
		ready, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		switch {
		case errno == syscall.EINTR:
			// A signal (the runtime's preemption, say): back through
			// RawConn.Read, which checks the deadline.
			return true
		case errno != 0:
			r.err, r.done = os.NewSyscallError("ppoll", errno), true
			return true
		case ready == 0:
			return true // the slice ended: check the deadline
		}
		// Readable, hung up or in error: read says which.
	}
}

// wake ends a wait in progress: the link is closing. Its error does not
// matter: the bounded wait ends anyway.
func (r *blockingReader) wake() { _ = r.closeRead() }
