//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package loop

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// fdConn is the descriptor path: a non-blocking socket watched by the
// loop's poller, read into the loop's one shared buffer and written from
// the loop goroutine. It costs no goroutine and no buffer while idle.
type fdConn struct {
	l      *Loop
	c      *Conn
	fd     int
	out    []byte // bytes the socket did not take yet: out[off:]
	off    int
	wwatch bool // writability is watched
	// closing: the connection ended; the socket closes once out is sent,
	// or when closeTimer fires.
	closing    bool
	closeTimer *Timer
	remote     string
}

// takeFD returns a descriptor of its own for nc's socket, in non-blocking
// mode, and closes nc; ok is false (and nc untouched) when nc is not a
// plain TCP or Unix socket.
func takeFD(nc net.Conn) (fd int, ok bool, err error) {
	sc, isSys := nc.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return -1, false, nil
	}
	if !isSys {
		return -1, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, false, err
	}
	var dupErr error
	fd = -1
	cerr := rc.Control(func(s uintptr) {
		// F_DUPFD_CLOEXEC: a new descriptor, close-on-exec from the
		// start. The runtime already made the socket non-blocking, a
		// property of the socket that the copy shares.
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			dupErr = errno
			return
		}
		fd = int(r)
	})
	if cerr != nil {
		return -1, false, cerr
	}
	if dupErr != nil {
		return -1, false, fmt.Errorf("loop: duplicating the socket: %w", dupErr)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, false, err
	}
	nc.Close() // the runtime's copy; the socket lives on in fd
	return fd, true, nil
}

func newFDConn(l *Loop, c *Conn, fd int, remote string) (*fdConn, error) {
	t := &fdConn{l: l, c: c, fd: fd, remote: remote}
	if err := l.p.add(fd); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	l.fds[fd] = t
	return t, nil
}

func (t *fdConn) pending() int { return len(t.out) - t.off }

// write sends b, keeping what the socket does not take now. b is not
// retained.
func (t *fdConn) write(b []byte) {
	if t.fd < 0 {
		return
	}
	if t.pending() == 0 {
		n, ok := t.writeSome(b)
		if !ok {
			return
		}
		b = b[n:]
	}
	if len(b) > 0 {
		t.out = append(t.out, b...)
		t.watchWrite(true)
	}
}

// writeSome writes as much of b as the socket takes; ok is false when the
// socket failed (the connection is then failed).
func (t *fdConn) writeSome(b []byte) (int, bool) {
	done := 0
	for done < len(b) {
		n, err := syscall.Write(t.fd, b[done:])
		if n > 0 {
			done += n
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return done, true
		default:
			t.fail(fmt.Errorf("pika: write to %s: %w", t.remote, err))
			return done, false
		}
	}
	return done, true
}

func (t *fdConn) watchWrite(on bool) {
	if t.wwatch != on {
		t.wwatch = on
		t.l.p.setWrite(t.fd, on)
	}
}

func (t *fdConn) onWritable() {
	if t.pending() > 0 {
		n, ok := t.writeSome(t.out[t.off:])
		if !ok {
			return
		}
		t.off += n
	}
	if t.pending() == 0 {
		// Keep a moderate buffer for the next burst, none after a huge
		// one.
		t.out, t.off = t.out[:0], 0
		if cap(t.out) > maxSpare {
			t.out = nil
		}
		t.watchWrite(false)
		if t.closing {
			t.closeNow()
		}
	}
}

// readsPerWake bounds the reads of one connection per readiness report, so
// that a busy connection does not starve the others.
const readsPerWake = 16

func (t *fdConn) onReadable() {
	buf := t.l.readBuf
	for i := 0; i < readsPerWake && t.fd >= 0; i++ {
		n, err := syscall.Read(t.fd, buf)
		if n > 0 && !t.closing {
			t.c.receive(buf[:n])
		}
		switch {
		case err == nil && n == 0:
			t.fail(fmt.Errorf("pika: read from %s: %w", t.remote, io.EOF))
			return
		case err == nil:
			if n < len(buf) {
				return
			}
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return
		default:
			t.fail(fmt.Errorf("pika: read from %s: %w", t.remote, err))
			return
		}
	}
}

// fail reports a socket error to the connection and drops the socket.
func (t *fdConn) fail(err error) {
	if t.closing {
		t.closeNow()
		return
	}
	t.c.transportFailed(err)
	t.closeNow()
}

// closeAfterFlush closes the socket once what is queued is sent, within
// closeFlushTimeout.
func (t *fdConn) closeAfterFlush() {
	if t.fd < 0 || t.closing {
		return
	}
	t.closing = true
	if t.pending() == 0 {
		t.closeNow()
		return
	}
	t.closeTimer = t.l.AfterFunc(closeFlushTimeout, t.closeNow)
}

// closeNow closes the socket at once.
func (t *fdConn) closeNow() {
	if t.fd < 0 {
		return
	}
	t.l.p.del(t.fd)
	syscall.Close(t.fd)
	delete(t.l.fds, t.fd)
	t.fd = -1
	t.out, t.off = nil, 0
	if t.closeTimer != nil {
		t.closeTimer.Stop()
	}
}
